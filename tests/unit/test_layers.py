"""The house's import rules (docs/architecture.md), read from the source: the event store imports no
application code; projections import only the store and the catalogue; the API and the CLI both call
services and never each other; services know neither."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("app", "events", "projections")


def imports(package: str) -> Iterator[tuple[str, str]]:
    """(file, imported first-party module) for every import in ``package`` (at any depth, lazy ones too)."""
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] in FIRST_PARTY:
                    yield str(path.relative_to(ROOT)), name


def offending(package: str, allowed: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()) -> list[str]:
    out = []
    for where, name in imports(package):
        if forbidden and any(name == f or name.startswith(f + ".") for f in forbidden):
            out.append(f"{where} imports {name}")
        if allowed and not any(name == a or name.startswith(a + ".") for a in allowed):
            out.append(f"{where} imports {name}")
    return out


def test_the_event_store_imports_no_application() -> None:
    assert offending("events", allowed=("events",)) == []


def test_projections_import_only_the_store_and_the_catalogue() -> None:
    assert offending("projections", allowed=("events", "projections", "app.catalogue")) == []


def test_api_and_cli_never_import_each_other() -> None:
    assert offending("app/commands", forbidden=("app.api",)) == []
    assert offending("app/api", forbidden=("app.commands", "app.cli")) == []


def test_services_know_neither_the_api_nor_the_cli() -> None:
    assert offending("app/services", forbidden=("app.api", "app.commands", "app.cli")) == []


def test_the_catalogue_is_the_bottom_of_the_application() -> None:
    assert offending("app/catalogue", allowed=("app.catalogue", "events")) == []
