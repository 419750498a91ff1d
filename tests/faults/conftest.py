"""Fixtures of the fault suite: a scenario with its own embedded PostgreSQL and the OpenAI stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import DOCS, LONG, Scenario
from tests.openai_standin import StandIn, openai_standin


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long form's scenarios take as long as their documents need: the suite-wide 600 s limit (a
    hang guard for the quick form) would stop them half-way on a loaded machine (60 documents at load
    15-23 took longer), so each gets ten minutes plus 40 s per document."""
    if not LONG:
        return
    for item in items:
        if item.path.parent.name == "faults" and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(600 + 40 * DOCS))


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with openai_standin() as srv:
        yield srv


@pytest.fixture
def scenario(tmp_path: Path, standin: StandIn) -> Iterator[Scenario]:
    s = Scenario(home=tmp_path / "home", documents=DOCS)
    s.home.mkdir()
    s.env.update(OPENAI_API_KEY="sk-faults", OPENAI_BASE_URL=standin.url)
    yield s
    s.stop_workers(timeout=20)
    s.cli("db", "stop")
    print(f"scenario took {time.monotonic() - s.started:.0f} s")
