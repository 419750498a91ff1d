"""Named SQL queries, kept in ``sql/queries/*.sql`` and looked up by name.

Each file holds blocks headed ``-- name: NAME``; the text up to the next header is the query.
Files are parsed once. Values are always passed as parameters, never formatted into the text.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """The project's ``sql/`` folder: beside the packages in a checkout, inside the wheel otherwise."""
    here = Path(__file__).resolve().parent.parent / "sql"
    if here.is_dir():
        return here
    return Path(str(resources.files("chronos_sql")))


def parse(text: str) -> dict[str, str]:
    """Split a file of ``-- name:`` blocks into {name: query}."""
    queries: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group("name")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body
    return queries


@functools.cache
def queries(group: str) -> dict[str, str]:
    """All queries of ``sql/queries/<group>.sql``."""
    path = sql_dir() / "queries" / f"{group}.sql"
    return parse(path.read_text(encoding="utf-8"))


def query(group: str, name: str) -> str:
    """One named query; a missing name is a programming error and says where it looked."""
    found = queries(group)
    if name not in found:
        raise KeyError(f"no query {name!r} in sql/queries/{group}.sql")
    return found[name]
