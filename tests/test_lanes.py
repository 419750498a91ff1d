"""Priority lanes of the work queue (app/pipeline/lanes.py), proven by claim order on a real database:
a small upload goes before a queued batch at every stage, a batch is not starved by a stream of
interactive uploads, later stages keep their document's lane, and ``CHRONOS_LANES=off`` claims oldest
first as before. No timing: every assertion is about which job a claim returns."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import LaneSettings, Settings
from app.embedders.batcher import Batcher
from app.pipeline import dispatcher, jobs, lanes
from app.pipeline.jobs import Job
from app.pipeline.stages import Outcome
from app.pipeline.worker import Worker
from app.runtime import Runtime
from events import EventStore, NewEvent, PgBlobStore
from events.subscription import Subscription

STAGES = ["embed", "chunk", "convert"]  # the worker's order: furthest along first


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def upload(store: EventStore, *, source: str = "api", key: str | None = None, size: int = 2_000) -> str:
    doc = str(uuid.uuid4())
    data: dict[str, Any] = {
        "document_id": doc,
        "filename": "d.pdf",
        "media_type": "application/pdf",
        "size": size,
        "sha256": "0" * 64,
        "blob": {"sha256": "0" * 64, "size": size, "media_type": None},
        "source": source,
        "key": key,
    }
    await store.append(stream_for(doc), [NewEvent(ev.DocumentUploaded.TYPE, data)], 0)
    return doc


async def folder_batch(store: EventStore, n: int) -> list[str]:
    return [await upload(store, source="cli", key=f"folder:/data:f{i}.pdf") for i in range(n)]


async def dispatch_all(store: EventStore) -> None:
    await Subscription(store, dispatcher.NAME, dispatcher.dispatch).catch_up()


async def lane_of(pool: asyncpg.Pool, doc: str, stage: str = "convert") -> str:
    lane: str = await pool.fetchval(
        "SELECT lane FROM jobs WHERE document_id = $1 AND stage = $2", uuid.UUID(doc), stage
    )
    return lane


async def claim_one(pool: asyncpg.Pool, prefer: str | None) -> Job:
    [job] = await jobs.claim(pool, STAGES, "w", 60, 1, prefer=prefer, several=["embed"])
    return job


async def test_the_lane_is_decided_at_enqueue(store: EventStore, pool: asyncpg.Pool) -> None:
    folder = await upload(store, source="cli", key="folder:/data:a.pdf")
    single_cli = await upload(store, source="cli")
    api = await upload(store, source="api", key="api:x")
    directus = await upload(store, source="directus", key="directus:f1")
    large = await upload(store, source="api", size=LaneSettings().interactive_max_bytes + 1)
    await dispatch_all(store)
    assert await lane_of(pool, folder) == "batch"
    assert await lane_of(pool, single_cli) == "interactive"
    assert await lane_of(pool, api) == "interactive"
    assert await lane_of(pool, directus) == "interactive"
    assert await lane_of(pool, large) == "batch"
    view = await pool.fetch("SELECT lane, stage, ready FROM v_job_lanes ORDER BY lane")
    assert [(r["lane"], r["stage"], r["ready"]) for r in view] == [
        ("batch", "convert", 2),
        ("interactive", "convert", 3),
    ]


async def test_a_loop_of_single_uploads_overflows_into_the_batch_lane(store: EventStore, pool: asyncpg.Pool) -> None:
    depth = LaneSettings().interactive_depth
    docs = [await upload(store) for _ in range(depth + 3)]
    await dispatch_all(store)
    assert [await lane_of(pool, d) for d in docs] == ["interactive"] * depth + ["batch"] * 3


async def test_reprocess_requests_go_to_the_batch_lane(store: EventStore, pool: asyncpg.Pool) -> None:
    doc = str(uuid.uuid4())
    data = {"document_id": doc, "request_id": "r1", "model": "local:all-MiniLM-L6-v2"}
    await store.append(stream_for(doc), [NewEvent(ev.EmbeddingRequested.TYPE, data)])
    await dispatch_all(store)
    assert await lane_of(pool, doc, "embed") == "batch"


async def test_later_stages_keep_their_documents_lane(store: EventStore, pool: asyncpg.Pool) -> None:
    [batch_doc] = await folder_batch(store, 1)
    small = await upload(store)
    await dispatch_all(store)
    for doc in (batch_doc, small):
        converted = {
            "document_id": doc, "conversion_id": str(uuid.uuid4()), "input_sha256": "0" * 64, "backend": "local",
            "pipeline": "native", "docling_version": "x", "page_count": 2,
            "durations": {"total_s": 0.1, "convert_s": 0.1},
            "docling_json": {"sha256": "1" * 64, "size": 1}, "markdown": {"sha256": "2" * 64, "size": 1},
            "settings_hash": "h",
        }  # fmt: skip
        await store.append(stream_for(doc), [NewEvent(ev.DocumentConverted.TYPE, converted)])
    await dispatch_all(store)
    assert await lane_of(pool, small, "chunk") == "interactive"
    assert await lane_of(pool, batch_doc, "chunk") == "batch"


async def test_an_upload_is_claimed_before_a_queued_batch_at_every_stage(store: EventStore, pool: asyncpg.Pool) -> None:
    """A batch has convert jobs queued and embed jobs (further along) queued too; the small upload's
    convert job, queued last, is the next claim -- before the batch's embed jobs."""
    await folder_batch(store, 5)
    await dispatch_all(store)
    async with pool.acquire() as conn:
        for i in range(3):  # the batch's documents further along
            await jobs.enqueue(conn, document_id=str(uuid.uuid4()), stage="embed", trigger_event_id=uuid.uuid4(),
                               trigger_position=1000 + i, lane="batch")  # fmt: skip
    small = await upload(store)
    await dispatch_all(store)
    first = await claim_one(pool, prefer=lanes.INTERACTIVE)
    assert (str(first.document_id), first.stage, first.lane) == (small, "convert", "interactive")
    then = await claim_one(pool, prefer=lanes.INTERACTIVE)
    assert (then.stage, then.lane) == ("embed", "batch")  # then furthest along first, as before


async def test_with_lanes_off_claims_are_oldest_first(store: EventStore, pool: asyncpg.Pool) -> None:
    batch = await folder_batch(store, 3)
    await upload(store)
    await dispatch_all(store)
    order = [str((await claim_one(pool, prefer=None)).document_id) for _ in range(3)]
    assert order == batch  # the upload waits behind the whole batch (the behaviour lanes fix)


async def test_a_batch_is_not_starved_by_a_stream_of_uploads(store: EventStore, pool: asyncpg.Pool) -> None:
    """Interactive uploads keep arriving (one per claim, so the interactive lane is never empty); the
    batch still gets one claim in every ``batch_share``."""
    settings = LaneSettings(batch_share=4)
    batch = await folder_batch(store, 3)
    turns = lanes.Turns(settings)
    taken: list[str] = []
    for _ in range(12):
        await upload(store)
        await dispatch_all(store)
        taken.append((await claim_one(pool, prefer=turns.next())).lane)
    assert taken.count("batch") == 3 and taken[3] == taken[7] == taken[11] == "batch"
    claimed = await pool.fetchval("SELECT count(*) FROM jobs WHERE document_id = ANY($1) AND status = 'running'",
                                  [uuid.UUID(d) for d in batch])  # fmt: skip
    assert claimed == 3


async def test_a_worker_runs_the_upload_before_the_queued_batch(rt: Runtime, store: EventStore) -> None:
    """The real worker loop (one slot): the batch was queued first, the upload runs first."""
    batch = await folder_batch(store, 4)
    small = await upload(store)
    await dispatch_all(store)
    order: list[str] = []
    done = asyncio.get_running_loop().create_future()

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        order.append(str(job.document_id))
        if len(order) == 5 and not done.done():
            done.set_result(None)
        return Outcome("done")

    worker = Worker(rt, stages=("convert",), concurrency=1, poll_interval=0.05, runner=runner)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(done, 60)
    finally:
        stop.set()
        await task
    assert order == [small, *batch]


async def _run_worker(worker: Worker, until: asyncio.Future[None]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(until, 60)
    finally:
        stop.set()
        await task


async def test_the_express_slot_runs_an_upload_while_the_only_slot_holds_a_batch_job(
    rt: Runtime, store: EventStore
) -> None:
    """One slot, busy with a batch job that does not end until the upload is done: the express slot runs
    the upload beside it (without it the upload waited for the batch job at every stage)."""
    batch = await folder_batch(store, 2)
    await dispatch_all(store)
    batch_started = asyncio.Event()
    small_done = asyncio.get_running_loop().create_future()
    order: list[str] = []

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        order.append(str(job.document_id))
        if job.lane == lanes.BATCH:
            batch_started.set()
            await asyncio.wait_for(asyncio.shield(small_done), 30)  # held until the upload ran
        elif not small_done.done():
            small_done.set_result(None)
        return Outcome("done")

    worker = Worker(rt, stages=("convert",), concurrency=1, poll_interval=0.05, runner=runner)
    assert worker.express

    async def upload_once_batch_runs() -> None:
        await batch_started.wait()
        small = await upload(store)
        await dispatch_all(store)
        order.append(f"uploaded {small}")

    uploader = asyncio.create_task(upload_once_batch_runs())
    await _run_worker(worker, small_done)
    await uploader
    small = next(o.split()[1] for o in order if o.startswith("uploaded "))
    assert order[0] == batch[0] and small in order  # the batch job was still held when the upload ran
    assert worker.express_runs == 1


async def test_interactive_work_alone_stays_within_the_slots(rt: Runtime, store: EventStore) -> None:
    """Only uploads queued: the express slot never runs, so one slot means one job at a time."""
    docs = [await upload(store) for _ in range(3)]
    await dispatch_all(store)
    running, most = 0, 0
    finished = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def runner(_rt: Runtime, job: Job, _owner: str) -> Outcome:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        seen.append(str(job.document_id))
        if len(seen) == len(docs) and not finished.done():
            finished.set_result(None)
        return Outcome("done")

    worker = Worker(rt, stages=("convert",), concurrency=1, poll_interval=0.05, runner=runner)
    await _run_worker(worker, finished)
    assert sorted(seen) == sorted(docs) and most == 1 and worker.express_runs == 0


def test_with_lanes_off_there_is_no_express_slot(rt: Runtime) -> None:
    off = Runtime(Settings(database_url=rt.dsn, lanes=LaneSettings(enabled=False)), rt.dsn, rt.pool, rt.store, rt.blobs)
    assert not Worker(off).express and Worker(rt).express


def test_urgent_texts_go_ahead_of_a_waiting_batch() -> None:
    """The embedder's queue: while one batch runs, a batch job's texts wait; an interactive job's texts
    submitted after them make up the next batch."""
    started, gate = threading.Event(), threading.Event()
    seen: list[list[str]] = []

    def forward(texts: list[str]) -> np.ndarray:
        seen.append(list(texts))
        if len(seen) == 1:
            started.set()
            gate.wait(30)
        return np.zeros((len(texts), 2), dtype=np.float32)

    batcher = Batcher(forward, dimensions=2, threads=1, batch_size=4, min_batch=4)
    running = batcher.submit([f"a{i}" for i in range(4)], [1] * 4, urgent=False)
    assert started.wait(30)
    queued = batcher.submit([f"b{i}" for i in range(8)], [5] * 8, urgent=False)
    urgent = batcher.submit(["u0", "u1"], [1, 1], urgent=True)
    gate.set()
    for future in (running, queued, urgent):
        future.result(30)
    assert seen[0] == ["a0", "a1", "a2", "a3"]
    assert seen[1][:2] == ["u0", "u1"]  # shorter than the batch's texts, yet first


def test_the_lane_settings_are_read_and_checked() -> None:
    from app.config import ConfigError

    assert LaneSettings.from_env({"CHRONOS_LANES": "off"}).enabled is False
    assert LaneSettings.from_env({}).enabled is True
    with pytest.raises(ConfigError, match="CHRONOS_LANES"):
        LaneSettings.from_env({"CHRONOS_LANES": "sometimes"})
    turns = lanes.Turns(LaneSettings(enabled=False))
    assert [turns.next() for _ in range(4)] == [None] * 4
