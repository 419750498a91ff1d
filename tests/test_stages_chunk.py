"""The chunk stage turns a ChunkingError (bad settings, a conversion that is not a DoclingDocument) into
one final ChunkingFailed with the reason: deterministic failures are not retried."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.pipeline import dispatcher
from app.pipeline.worker import Worker
from app.runtime import Runtime
from app.services.documents import document_states
from events import EventStore, PgBlobStore
from events.subscription import Subscription
from projections.synthetic import SyntheticDocument
from tests.support import request
from tests.test_pipeline import drive, put_bytes

pytestmark = pytest.mark.local_models


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def drain(rt: Runtime, *stages: str, timeout: float = 120) -> None:
    """Run an in-process worker until every event is dispatched and no job is queued or running."""
    sub = Subscription(rt.store, dispatcher.NAME, dispatcher.dispatch)
    stop = asyncio.Event()
    stages = stages or ("convert", "chunk", "embed")
    worker = Worker(rt, stages=stages, concurrency=2, poll_interval=0.2)
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout):
            last: object = None
            while True:
                await sub.catch_up()
                snap = await rt.pool.fetchrow(
                    """SELECT (SELECT coalesce(max(position), 0) FROM events) AS head,
                              (SELECT position FROM subscriptions WHERE name = $1) AS dispatched,
                              (SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')
                                 AND stage = ANY($2::text[])) AS busy,
                              (SELECT count(*) FROM jobs) AS jobs""",
                    dispatcher.NAME,
                    list(stages),
                )
                assert snap is not None
                quiet = snap["busy"] == 0 and snap["dispatched"] >= snap["head"]
                if quiet and tuple(snap) == last:  # nothing moved between two quiet looks
                    return
                last = tuple(snap) if quiet else None
                await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task


async def stage_events(rt: Runtime, document_id: str, kind: str) -> list[dict[str, object]]:
    return [e.data for e in await rt.store.read_stream(stream_for(document_id)) if e.type == kind]


async def test_conversion_that_is_not_a_docling_document_fails_finally(rt: Runtime) -> None:
    doc = SyntheticDocument(rt.store, rt.blobs)
    await doc.upload()
    markdown = await rt.blobs.put_bytes(b"# Broken\n\nText.\n", "text/markdown")
    bad_json = await rt.blobs.put_bytes(b"[1, 2, 3]", "application/json")  # JSON, but no DoclingDocument
    await doc.append(ev.DocumentConverted(
        document_id=doc.document_id, conversion_id=str(uuid.uuid4()), input_sha256="0" * 64,
        backend="local", pipeline="simple", docling_version="2.0.0", page_count=0,
        durations=ev.Durations(total_s=0.1, convert_s=0.1), docling_json=ev.BlobRef.of(bad_json),
        markdown=ev.BlobRef.of(markdown), settings_hash="s1",
    ))  # fmt: skip
    await drain(rt, "chunk")
    [failed] = await stage_events(rt, doc.document_id, ev.ChunkingFailed.TYPE)
    assert failed["error_class"] == "ChunkingError" and failed["final"] and not failed["retryable"]
    assert "DoclingDocument" in str(failed["message"]) and failed["attempt"] == 1
    state = (await document_states(rt.pool, [doc.document_id]))[doc.document_id]
    assert state.status == "failed" and state.failure
    job = await rt.pool.fetchrow("SELECT status, attempts FROM jobs WHERE stage = 'chunk'")
    assert job is not None
    assert (job["status"], job["attempts"]) == ("failed", 1)


async def test_bad_chunk_settings_fail_finally_and_keep_the_old_chunks(rt: Runtime) -> None:
    up = await put_bytes(rt, b"# Settings\n\nA paragraph about chunk sizes and overlaps.\n", "settings.md")
    assert (await drive(rt, [up.document_id]))[up.document_id] == "searchable"
    await request(rt.store, "chunk", [up.document_id], chunk_size=8)
    await drain(rt)
    [failed] = await stage_events(rt, up.document_id, ev.ChunkingFailed.TYPE)
    assert failed["error_class"] == "ChunkingError" and failed["final"] and failed["attempt"] == 1
    assert "too small" in str(failed["message"]) and "chunk_size=8" in str(failed["message"])
    assert len(await stage_events(rt, up.document_id, ev.DocumentChunked.TYPE)) == 1
    attempts = await rt.pool.fetchval("SELECT max(attempts) FROM jobs WHERE stage = 'chunk'")
    assert attempts == 1
