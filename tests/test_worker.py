"""Worker runtime mechanics against a real database: dispatch, leases, retries, exactly-once.

The stage itself is replaced by a recording runner here (the real stages are tested end to end in
tests/test_pipeline.py); everything else -- queue, leases, commits, events -- is the real thing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import job_id_for, stream_for
from app.config import Settings
from app.pipeline import dispatcher, jobs
from app.pipeline.backend import backend_services
from app.pipeline.jobs import Job
from app.pipeline.stages import Outcome, StageFailure, failure_outcome
from app.pipeline.worker import Worker
from app.runtime import Runtime
from app.supervisor import Supervisor
from events import EventStore, NewEvent, PgBlobStore
from events.subscription import Subscription


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def upload(store: EventStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        doc = str(uuid.uuid4())
        data = {
            "document_id": doc,
            "filename": f"d{i}.md",
            "media_type": "text/markdown",
            "size": 1,
            "sha256": "0" * 64,
            "blob": {"sha256": "0" * 64, "size": 1, "media_type": None},
            "source": "test",
        }
        await store.append(stream_for(doc), [NewEvent(ev.DocumentUploaded.TYPE, data)], 0)
        ids.append(doc)
    return ids


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def converted_event(job: Job) -> NewEvent:
    return NewEvent("TestConverted", {"document_id": str(job.document_id)}, event_id=job.result_id("converted"))


async def test_dispatcher_enqueues_each_event_once(rt: Runtime, store: EventStore, pool: asyncpg.Pool) -> None:
    await upload(store, 3)
    sub = Subscription(store, dispatcher.NAME, dispatcher.dispatch)
    assert await sub.catch_up() == 3
    assert await sub.catch_up() == 0
    await sub.reset()  # even when the events are dispatched again, jobs are not doubled
    await sub.catch_up()
    rows = await pool.fetch("SELECT stage, status FROM jobs")
    assert [(r["stage"], r["status"]) for r in rows] == [("convert", "queued")] * 3


async def run_workers(rt: Runtime, workers: list[Worker], until: asyncio.Future[None], timeout: float = 30) -> None:
    """Each worker with its dispatcher (no projections, no warm-up), as ``chronos worker`` runs it."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(Supervisor(backend_services(rt, w, projections=False, warm=False)).run(stop))
        for w in workers
    ]
    try:
        await asyncio.wait_for(until, timeout)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_two_workers_process_every_job_exactly_once(rt: Runtime, store: EventStore, pool: asyncpg.Pool) -> None:
    docs = await upload(store, 24)
    calls: Counter[uuid.UUID] = Counter()
    done = asyncio.get_running_loop().create_future()

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        calls[job.job_id] += 1
        await asyncio.sleep(0.01)
        if sum(calls.values()) >= len(docs) and not done.done():
            asyncio.get_running_loop().call_later(0.5, lambda: _resolve(done))
        return Outcome("done", [converted_event(job)])

    workers = [
        Worker(
            rt,
            stages=("convert",),
            concurrency=3,
            owner=f"w{i}",
            runner=runner,
            poll_interval=0.2,
        )
        for i in range(2)
    ]
    await run_workers(rt, workers, done)
    assert len(calls) == 24 and set(calls.values()) == {1}
    statuses = await pool.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
    assert {r["status"]: r["count"] for r in statuses} == {"done": 24}
    n = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'TestConverted'")
    assert n == 24
    assert sum(w.processed for w in workers) == 24
    assert all(w.processed > 0 for w in workers)  # both took part


async def test_expired_lease_is_taken_over_and_result_recorded_once(
    rt: Runtime, store: EventStore, pool: asyncpg.Pool
) -> None:
    await upload(store, 1)
    await Subscription(store, dispatcher.NAME, dispatcher.dispatch).catch_up()
    # A worker claims the job and dies (never finishes, never extends).
    [dead] = await jobs.claim(pool, ["convert"], "dead-worker", 0.3, 1)
    assert await jobs.claim(pool, ["convert"], "other", 60, 1) == []  # still leased
    await asyncio.sleep(0.4)
    [taken] = await jobs.claim(pool, ["convert"], "other", 60, 1)
    assert taken.job_id == dead.job_id and taken.attempts == 2
    # The dead worker comes back to life and tries to finish: refused, its lease is gone.
    async with pool.acquire() as conn:
        assert not await jobs.finish(conn, dead, "dead-worker", "done")


async def test_retries_back_off_then_fail_finally(rt: Runtime, store: EventStore, pool: asyncpg.Pool) -> None:
    [doc] = await upload(store, 1)
    attempts: list[int] = []
    done = asyncio.get_running_loop().create_future()

    async def runner(_rt: Runtime, job: Job, owner: str) -> Outcome:
        attempts.append(job.attempts)
        outcome = failure_outcome(
            job, owner, StageFailure("Timeout", "took too long", retryable=True), backoff_base=0.05
        )
        if outcome.status == "failed" and not done.done():
            asyncio.get_running_loop().call_later(0.3, lambda: _resolve(done))
        return outcome

    worker = Worker(rt, stages=("convert",), concurrency=1, runner=runner, poll_interval=0.05)
    await run_workers(rt, [worker], done)
    assert attempts == [1, 2, 3, 4]
    failures = [e for e in await store.read_stream(stream_for(doc)) if e.type == ev.ConversionFailed.TYPE]
    assert [e.data["attempt"] for e in failures] == [1, 2, 3, 4]
    assert [e.data["final"] for e in failures] == [False, False, False, True]
    assert await pool.fetchval("SELECT status FROM jobs") == "failed"


async def test_non_retryable_failure_is_final_at_once(rt: Runtime, store: EventStore, pool: asyncpg.Pool) -> None:
    [doc] = await upload(store, 1)
    done = asyncio.get_running_loop().create_future()

    async def runner(_rt: Runtime, job: Job, owner: str) -> Outcome:
        asyncio.get_running_loop().call_later(0.3, lambda: _resolve(done))
        return failure_outcome(job, owner, StageFailure("UnsupportedMediaType", "a PNG", retryable=False))

    await run_workers(rt, [Worker(rt, stages=("convert",), runner=runner)], done)
    [failure] = [e for e in await store.read_stream(stream_for(doc)) if e.type == ev.ConversionFailed.TYPE]
    assert failure.data["final"] is True and failure.data["error_class"] == "UnsupportedMediaType"


async def test_worker_survives_a_crashing_stage_and_keeps_going(
    rt: Runtime, store: EventStore, pool: asyncpg.Pool
) -> None:
    docs = await upload(store, 4)
    done = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        seen.append(str(job.document_id))
        if str(job.document_id) == docs[0] and job.attempts == 1:
            raise ZeroDivisionError("a bug in a stage")
        if len(set(seen)) == 4 and seen.count(docs[0]) >= 2 and not done.done():
            asyncio.get_running_loop().call_later(0.3, lambda: _resolve(done))
        return Outcome("done", [converted_event(job)])

    worker = Worker(rt, stages=("convert",), concurrency=1, runner=runner, poll_interval=0.05)
    # The crash is retried after backoff (2 s for attempt 1).
    await run_workers(rt, [worker], done, timeout=20)
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'done'") == 4
    internal = [e for e in await store.read_stream(stream_for(docs[0])) if e.type == ev.ConversionFailed.TYPE]
    assert internal and internal[0].data["error_class"] == "InternalError" and not internal[0].data["final"]


async def test_stop_releases_in_flight_jobs(rt: Runtime, store: EventStore, pool: asyncpg.Pool) -> None:
    await upload(store, 1)
    await Subscription(store, dispatcher.NAME, dispatcher.dispatch).catch_up()
    started = asyncio.Event()

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        started.set()
        await asyncio.sleep(60)
        return Outcome("done")

    worker = Worker(rt, stages=("convert",), runner=runner, grace_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    row = await pool.fetchrow("SELECT status, attempts, lease_owner FROM jobs")
    assert row is not None
    assert row["status"] == "queued" and row["attempts"] == 0 and row["lease_owner"] is None


@pytest.mark.parametrize("stage", ["convert"])
async def test_job_ids_are_deterministic(stage: str) -> None:
    trigger = uuid.uuid4()
    assert job_id_for(trigger, stage) == job_id_for(trigger, stage)
    assert job_id_for(trigger, stage) != job_id_for(trigger, "chunk")


async def test_slots_take_the_job_furthest_along_and_no_stage_holds_every_slot(rt: Runtime, pool: asyncpg.Pool) -> None:
    """Documents flow through: a queued embed job goes before older convert jobs, and with two slots
    one stage never holds both (a conversion runs beside an embedding)."""
    for i, stage in enumerate(["convert"] * 4 + ["chunk", "embed"]):
        async with pool.acquire() as conn:
            await jobs.enqueue(conn, document_id=str(uuid.uuid4()), stage=stage, trigger_event_id=uuid.uuid4(),
                               trigger_position=i + 1)  # fmt: skip
    running: list[str] = []
    peak: Counter[tuple[str, ...]] = Counter()
    order: list[str] = []
    done = asyncio.get_running_loop().create_future()

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        order.append(job.stage)
        running.append(job.stage)
        peak[tuple(sorted(running))] += 1
        await asyncio.sleep(0.2)
        running.remove(job.stage)
        if len(order) == 6:
            _resolve(done)
        return Outcome("done")

    worker = Worker(rt, concurrency=2, poll_interval=0.05, runner=runner)
    await run_workers(rt, [worker], done)
    assert set(order[:2]) == {"embed", "chunk"}  # furthest along first, though queued last
    assert sorted(order) == sorted(["convert"] * 4 + ["chunk", "embed"])
    assert ("convert", "convert") not in peak  # one stage never held both slots


async def test_one_slot_runs_several_embed_jobs_side_by_side(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    """Embed jobs are claimed ``CHRONOS_EMBED_JOBS`` at a time and run together in one slot (so the
    embedder's threads have work from several small documents); the other slot still converts, a
    job that raises does not take its siblings down, and every job ends exactly once."""
    rt = Runtime(Settings(database_url=dsn, embed_jobs=3), dsn, pool, store, PgBlobStore(pool))
    stages = ["embed"] * 6 + ["convert"] * 2
    for i, stage in enumerate(stages):
        async with pool.acquire() as conn:
            await jobs.enqueue(conn, document_id=str(uuid.uuid4()), stage=stage, trigger_event_id=uuid.uuid4(),
                               trigger_position=i + 1)  # fmt: skip
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    seen: Counter[uuid.UUID] = Counter()
    together: list[tuple[int, int]] = []  # (embeds, converts) running whenever a job starts
    done = asyncio.get_running_loop().create_future()
    boom: list[uuid.UUID] = []

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        seen[job.job_id] += 1
        running[job.stage] += 1
        peak[job.stage] = max(peak[job.stage], running[job.stage])
        together.append((running["embed"], running["convert"]))
        try:
            await asyncio.sleep(0.3)
            if job.stage == "embed" and not boom:
                boom.append(job.job_id)
                raise RuntimeError("a bug in one embed job")
        finally:
            running[job.stage] -= 1
            if sum(seen.values()) >= len(stages) + 1:  # the failed job is retried once more
                asyncio.get_running_loop().call_later(0.3, lambda: _resolve(done))
        return Outcome("done")

    worker = Worker(rt, concurrency=2, poll_interval=0.05, runner=runner)
    await run_workers(rt, [worker], done)
    assert peak["embed"] == 3  # one slot, three embed jobs at once
    assert any(e >= 1 and c >= 1 for e, c in together)  # a conversion beside them in the other slot
    statuses = await pool.fetch("SELECT job_id, status, attempts FROM jobs")
    assert {r["status"] for r in statuses} == {"done"}
    assert {r["job_id"]: r["attempts"] for r in statuses if r["job_id"] in boom} == {boom[0]: 2}
    assert len(seen) == len(stages) and sorted(seen.values()) == [1] * (len(stages) - 1) + [2]


async def test_an_embed_only_worker_fills_every_slot_with_embed_jobs(
    dsn: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    """Slots, not jobs, count against a stage's limit: an embed-only worker with two slots runs two
    groups of ``CHRONOS_EMBED_JOBS`` side by side."""
    rt = Runtime(Settings(database_url=dsn, embed_jobs=2), dsn, pool, store, PgBlobStore(pool))
    for i in range(8):
        async with pool.acquire() as conn:
            await jobs.enqueue(conn, document_id=str(uuid.uuid4()), stage="embed", trigger_event_id=uuid.uuid4(),
                               trigger_position=i + 1)  # fmt: skip
    running = 0
    peak = 0
    finished = 0
    done = asyncio.get_running_loop().create_future()

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.3)
        running -= 1
        finished += 1
        if finished == 8:
            _resolve(done)
        return Outcome("done")

    worker = Worker(rt, stages=("embed",), concurrency=2, poll_interval=0.05, runner=runner)
    await run_workers(rt, [worker], done)
    assert peak == 4  # two slots x two jobs
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'done'") == 8


async def test_a_queued_job_wakes_an_idle_worker_through_the_hub(rt: Runtime, store: EventStore) -> None:
    """The dispatcher's ``chronos_jobs`` NOTIFY reaches the idle slots through the process's hub: a job
    queued long after the worker went idle runs well before its 60 s poll would find it."""
    ran = asyncio.Event()

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        ran.set()
        return Outcome("done", [converted_event(job)])

    worker = Worker(rt, stages=("convert",), concurrency=2, runner=runner, poll_interval=60)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(rt.hub.connected.wait(), 10)
        await asyncio.sleep(0.3)  # both slots found nothing and wait (up to 60 s each)
        await upload(store, 1)
        await Subscription(store, dispatcher.NAME, dispatcher.dispatch).catch_up()  # enqueues and notifies
        await asyncio.wait_for(ran.wait(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
