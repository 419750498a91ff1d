"""A worker process's back end, composed as ``chronos worker`` composes it: one LISTEN connection for
the whole process (dispatcher, five projections and the job runner share the hub); and
``chronos ingest --wait`` starts nothing -- no warm-up to wait for at exit -- when nothing is left to do."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import asyncpg
import orjson
import pytest

from app.cli import build_parser
from app.commands import ingest
from app.config import Settings
from app.pipeline import warmup
from app.pipeline.backend import backend_services
from app.pipeline.jobs import Job
from app.pipeline.stages import Outcome
from app.pipeline.worker import Worker
from app.runtime import Runtime, open_runtime
from app.services.upload import ingest_stream
from app.supervisor import Supervisor
from events import EventStore, PgBlobStore
from events.blobs import aiter_file
from tests.api_support import fake_failure
from tests.test_worker import converted_event, upload


async def wait_for_value(conn: asyncpg.Connection, sql: str, expected: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (value := await conn.fetchval(sql)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{sql!r} gave {value}, expected {expected}")
        await asyncio.sleep(0.05)


async def test_a_worker_process_listens_on_exactly_one_connection(dsn: str, tmp_path: Path) -> None:
    """Every backend of this database except the observer belongs to the worker process: its pool,
    plus exactly one more -- the hub (before: one LISTEN connection per subscription plus one for
    job wake-ups, seven in all)."""
    observer = await asyncpg.connect(dsn, server_settings={"application_name": "observer"})

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        return Outcome("done", [converted_event(job)])

    try:
        async with open_runtime(Settings(database_url=dsn, home=tmp_path), max_size=12) as rt:
            await upload(rt.store, 6)
            worker = Worker(rt, concurrency=2, runner=runner, poll_interval=0.1)
            services = backend_services(rt, worker)
            assert [s.name for s in services] == [
                "dispatcher",
                "projection:documents",
                "projection:index",
                "projection:cost_ledger",
                "projection:embedding_cache",
                "projection:tokens",
                "projection:collections",
                "budget-alerts",
                "jobs",
            ]
            async with Supervisor(services).running():
                await asyncio.wait_for(rt.hub.connected.wait(), 10)
                await wait_for_value(observer, "SELECT count(*) FROM jobs WHERE status = 'done'", 6)
                await wait_for_value(observer, "SELECT count(*) FROM documents", 6)
                size = rt.pool.get_size()
                rows = await observer.fetch(
                    """SELECT application_name FROM pg_stat_activity
                       WHERE datname = current_database() AND backend_type = 'client backend'
                         AND pid <> pg_backend_pid()"""
                )
                assert rt.pool.get_size() == size  # the pool did not change while we looked
            names = Counter(r["application_name"] for r in rows)
            assert len(rows) - size == 1, names
            assert names == {"chronos": size, f"chronos-hub:{worker.owner}": 1}  # what /readyz counts
            assert rt.hub.connects == 1
    finally:
        await observer.close()


async def test_ingest_wait_with_nothing_left_to_do_starts_no_warm_up(
    dsn: str,
    pool: asyncpg.Pool,
    store: EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The 9-17 s of silence after ``ingest --wait``'s last line: the warm-up's model-loading threads
    (which cannot be interrupted, and which the interpreter waits for at exit) were started even when
    every document was final already. Now nothing is started then."""
    path = tmp_path / "done.md"
    path.write_text("# Done\n\nAlready dealt with.\n")
    rt = Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))
    first = await ingest_stream(store, rt.blobs, aiter_file(path), filename=path.name, source="cli", actor="test")
    await fake_failure(rt, first.document_id)  # final: nothing is left to do for it
    warmed: list[str] = []
    monkeypatch.setattr(warmup, "warm_converter", lambda: warmed.append("converter"))
    monkeypatch.setattr(warmup, "warm_chunker", lambda: warmed.append("chunker"))
    monkeypatch.setattr(warmup, "warm_embedder", lambda _settings: warmed.append("embedder"))
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("CHRONOS_HOME", str(tmp_path / "home"))

    args = build_parser().parse_args(["ingest", str(path), "--wait", "--json"])
    assert await ingest.run(args) == 0
    [row] = orjson.loads(capsys.readouterr().out)
    assert (row["document_id"], row["status"]) == (first.document_id, "failed")
    await asyncio.sleep(0.2)  # a warm-up started in the background would have begun by now
    assert warmed == []
