"""Fixtures of the fault suite: a scenario with its own embedded PostgreSQL and the OpenAI stand-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import DOCS, Scenario
from tests.openai_standin import StandIn, openai_standin


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
