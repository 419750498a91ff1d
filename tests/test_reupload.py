"""Same content, same live document: also after a delete, also when many uploads race (issue: 20
concurrent re-uploads after a delete made 20 documents, and search returned the same text 10 times)."""

from __future__ import annotations

import asyncio

import asyncpg

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.services.delete import delete_document
from app.services.documents import document_states
from app.services.upload import ingest_stream
from events import EventStore, PgBlobStore
from events.blobs import aiter_bytes

CONTENT = b"# Quarry beacon\n\nThe beacon over the quarry was lit again tonight.\n"


async def put(store: EventStore, blobs: PgBlobStore) -> tuple[str, bool]:
    result = await ingest_stream(store, blobs, aiter_bytes(CONTENT), filename="beacon.md", source="cli", actor="test")
    return result.document_id, result.created


async def test_concurrent_reuploads_after_a_delete_make_one_live_document(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool
) -> None:
    doc, created = await put(store, blobs)
    assert created
    assert await delete_document(store, doc, "test", "test")
    results = await asyncio.gather(*(put(store, blobs) for _ in range(20)))
    assert {d for d, _ in results} == {doc}
    assert sum(1 for _, c in results if c) == 1, "exactly one of the racing uploads records the content again"
    events = await store.read_stream(stream_for(doc))
    assert [e.type for e in events] == [ev.DocumentUploaded.TYPE, ev.DocumentDeleted.TYPE, ev.DocumentUploaded.TYPE]
    state = (await document_states(pool, [doc]))[doc]
    assert state.status == "uploaded" and state.deleted_at is None
    assert await pool.fetchval("SELECT count(DISTINCT stream_id) FROM events") == 1


async def test_same_content_while_live_is_a_no_op(store: EventStore, blobs: PgBlobStore) -> None:
    results = await asyncio.gather(*(put(store, blobs) for _ in range(10)))
    assert len({d for d, _ in results}) == 1 and sum(1 for _, c in results if c) == 1
    assert len(await store.read_stream(stream_for(results[0][0]))) == 1
