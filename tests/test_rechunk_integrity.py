"""A re-chunk or re-embed never loses a document's vectors (issue: a re-chunk with unchanged
settings left a searchable document with 0 vectors while `chronos check` passed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.check import run_checks
from app.config import Settings
from app.runtime import Runtime
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from tests.support import request
from tests.test_pipeline import drive, put_bytes
from tests.test_stages_chunk import drain

pytestmark = pytest.mark.local_models

TEXT = b"# Harbour report\n\nThe port throughput measure rose 8.8 percent in the first quarter.\n\n" + (
    b"Cranes and berths were busy all season long. " * 40
)


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def vectors_of(rt: Runtime, doc: str) -> int:
    return int(await rt.pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1::uuid", doc))


async def status_of(rt: Runtime, doc: str) -> str:
    return str(await rt.pool.fetchval("SELECT status FROM documents WHERE document_id = $1::uuid", doc))


async def test_rechunk_with_unchanged_settings_keeps_vectors(rt: Runtime) -> None:
    up = await put_bytes(rt, TEXT, "harbour.md")
    assert (await drive(rt, [up.document_id]))[up.document_id] == "searchable"
    await catch_up_all(rt.pool, rt.dsn)
    before = await vectors_of(rt, up.document_id)
    assert before > 0
    for _ in range(3):
        await request(rt.store, "chunk", [up.document_id])
        # Projections catch up between the stages, as they do live (in one batch the bug hid).
        await drain(rt, "chunk")
        await catch_up_all(rt.pool, rt.dsn)
        assert await vectors_of(rt, up.document_id) == before
        await drain(rt, "embed")
        await catch_up_all(rt.pool, rt.dsn)
        assert await vectors_of(rt, up.document_id) == before
        assert await status_of(rt, up.document_id) == "searchable"
    events = await rt.store.read_stream(stream_for(up.document_id))
    chunked = [e for e in events if e.type == ev.DocumentChunked.TYPE]
    assert len(chunked) == 1, "the same chunk set was appended again"
    assert len({e.data["chunk_set_id"] for e in chunked}) == 1
    assert sum(1 for e in events if e.type == ev.ChunkingUnchanged.TYPE) == 3
    report = await run_checks(rt.pool)
    assert not report.errors, [f.to_json() for f in report.errors]


async def test_rechunk_back_to_earlier_settings_and_reembed_keep_vectors(rt: Runtime) -> None:
    up = await put_bytes(rt, TEXT, "harbour.md")
    assert (await drive(rt, [up.document_id]))[up.document_id] == "searchable"
    await catch_up_all(rt.pool, rt.dsn)
    first = await vectors_of(rt, up.document_id)
    await request(rt.store, "chunk", [up.document_id], chunk_size=64)
    await drain(rt)
    await request(rt.store, "chunk", [up.document_id])  # the first set's (default) settings again
    await drain(rt)
    await request(rt.store, "embed", [up.document_id], model="local:all-MiniLM-L6-v2")
    await drain(rt)
    await catch_up_all(rt.pool, rt.dsn)
    assert await vectors_of(rt, up.document_id) == first
    assert await status_of(rt, up.document_id) == "searchable"
    set_ids = [e.data["chunk_set_id"] for e in await rt.store.read_stream(stream_for(up.document_id))
               if e.type == ev.DocumentChunked.TYPE]  # fmt: skip
    assert len(set_ids) == len(set(set_ids)), "a chunk set id was appended twice"
    current = await rt.pool.fetchval("SELECT chunk_set_id FROM documents WHERE document_id = $1::uuid", up.document_id)
    served = await rt.pool.fetchval("SELECT chunk_set_id FROM vector_sets WHERE document_id = $1::uuid", up.document_id)
    assert current == served
    report = await run_checks(rt.pool)
    assert not report.errors, [f.to_json() for f in report.errors]


async def test_check_reports_searchable_documents_without_vectors(rt: Runtime) -> None:
    up = await put_bytes(rt, TEXT, "harbour.md")
    assert (await drive(rt, [up.document_id]))[up.document_id] == "searchable"
    await catch_up_all(rt.pool, rt.dsn)
    assert not (await run_checks(rt.pool)).errors
    # What the old bug left behind: the vectors projection lost the document's vectors.
    await rt.pool.execute("DELETE FROM vector_sets WHERE document_id = $1::uuid", up.document_id)
    await rt.pool.execute("DELETE FROM vectors WHERE document_id = $1::uuid", up.document_id)
    report = await run_checks(rt.pool)
    assert [f.check for f in report.errors] == ["searchable_without_vectors"]
    assert up.document_id in report.errors[0].examples
