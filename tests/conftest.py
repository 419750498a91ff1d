"""Test harness: a real PostgreSQL with pgvector; a fresh database per test, cloned from a
migrated template (CREATE DATABASE ... TEMPLATE), so tests never see each other's rows."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from app.db import throwaway_database
from events.blobs import PgBlobStore
from events.connection import create_pool
from events.migrations import migrate
from events.store import EventStore
from tests.pg import server_dsn

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
_counter = itertools.count()


_TEMPROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Each test session gets a temp root of its own. pytest makes ``/tmp/pytest-of-<user>`` private
    (mode 0700) whenever a session starts, and the embedded servers of a session run as PostgreSQL's
    own system user under it: a second session started on the same machine (a developer's quick run
    beside the full suite) cut a running session's servers off their data directories ("could not
    open file .../pg_control: Permission denied" during initdb). The root is short (socket paths
    under it stay within the 107-byte limit) and removed at the end (``CHRONOS_KEEP_TEST_TMP=1``
    keeps it)."""
    global _TEMPROOT
    if os.environ.get("PYTEST_DEBUG_TEMPROOT") or config.option.basetemp:
        return
    _TEMPROOT = Path(tempfile.mkdtemp(prefix="c", dir="/tmp" if Path("/tmp").is_dir() else None))
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(_TEMPROOT)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TEMPROOT is not None and os.environ.get("CHRONOS_KEEP_TEST_TMP") != "1":
        shutil.rmtree(_TEMPROOT, ignore_errors=True)
        os.environ.pop("PYTEST_DEBUG_TEMPROOT", None)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    with server_dsn() as dsn:
        yield dsn


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_db(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = f"chronos_tpl_{os.getpid()}"
    async with throwaway_database(pg_admin_dsn, name, prepare=migrate):
        yield name


@pytest_asyncio.fixture(loop_scope="session")
async def dsn(pg_admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A freshly migrated database of its own for one test."""
    name = f"chronos_t{os.getpid()}_{next(_counter)}"
    async with throwaway_database(pg_admin_dsn, name, template=template_db) as db:
        yield db


@pytest_asyncio.fixture(loop_scope="session")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, min_size=1, max_size=10)
    try:
        yield p
    finally:
        await p.close()


@pytest_asyncio.fixture(loop_scope="session")
async def store(pool: asyncpg.Pool) -> AsyncIterator[EventStore]:
    s = EventStore(pool)
    yield s
    await s.notifier.close()


@pytest.fixture
def blobs(pool: asyncpg.Pool) -> PgBlobStore:
    return PgBlobStore(pool)


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the shared corpus is missing at {CORPUS}")
    return CORPUS


# --- tiers: `make test-unit`, `test-integration`, `test-acceptance` (pytest -m unit|integration|acceptance) ---
_DATABASE_FIXTURES = {"pg_admin_dsn", "template_db", "dsn", "pool", "store", "blobs"}


def _tier(item: pytest.Item) -> str:
    path = Path(str(item.fspath))
    if "unit" in path.parts:
        return "unit"
    module = getattr(item, "module", None)
    if "faults" in path.parts or (module is not None and hasattr(module, "Cli")) or path.name == "test_api_serve.py":
        return "acceptance"  # the CLI or the server as processes, and the fault suite
    return "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = _tier(item)
        if tier == "unit" and _DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(f"{item.nodeid} is in the unit tier but uses the database: move it to tests/")
        item.add_marker(getattr(pytest.mark, tier))
