"""Delete + blob GC; replay after GC still gives the same projections."""

from __future__ import annotations

import asyncpg
import numpy as np

from app.commands.delete import collect_blobs, delete_documents
from events import EventStore, PgBlobStore
from projections.replay import replay
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors
from tests.test_replay import projection_hashes


async def test_delete_collects_only_unshared_blobs_and_replay_agrees(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(5)
    gone = SyntheticDocument(store, blobs)
    twin = SyntheticDocument(store, blobs)  # same upload bytes as `gone` (a --force upload)
    for doc in (gone, twin):
        await doc.upload(b"same bytes")
        await doc.convert()
        await doc.chunk(["one", "two"])
    await gone.embed(random_unit_vectors(rng, 2, 8), "local:m8")
    await twin.embed(random_unit_vectors(rng, 2, 8), "local:m8")
    await catch_up_all(pool, dsn)
    assert await delete_documents(store, [gone.document_id], "test") == [gone.document_id]
    assert await delete_documents(store, [gone.document_id], "again") == []
    await catch_up_all(pool, dsn)
    removed = await collect_blobs(pool)
    assert removed == 2  # gone's markdown and vectors; the upload and docling JSON are shared with twin
    shared = await pool.fetchval("SELECT count(*) FROM blobs WHERE sha256 = encode(sha256('same bytes'), 'hex')")
    assert shared == 1
    before = await projection_hashes(pool)
    await replay(pool, dsn, progress=False)
    assert await projection_hashes(pool) == before


async def test_gc_collects_bytes_of_refused_uploads_after_the_grace_period(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    import datetime as dt

    import pytest

    from app.services.upload import UnsupportedMediaType, ingest_stream

    async def one(data: bytes):  # type: ignore[no-untyped-def]
        yield data

    kept = await ingest_stream(store, blobs, one(b"# kept\n\nA Markdown file.\n"), filename="kept.md",
                               source="test", actor="test", reject_unsupported=True)  # fmt: skip
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    with pytest.raises(UnsupportedMediaType):
        await ingest_stream(store, blobs, one(png), filename="x.png", source="test", actor="test",
                            reject_unsupported=True)  # fmt: skip
    # A refused upload is decided from its first bytes and stores nothing (issue 11 item 11).
    assert [r["sha256"] for r in await pool.fetch("SELECT sha256 FROM blobs")] == [kept.sha256]
    await blobs.put_bytes(png)  # bytes no event names (e.g. an upload whose event was never appended)
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 2
    assert await collect_blobs(pool, dt.timedelta(hours=1)) == 0  # kept during the grace period
    assert await collect_blobs(pool, dt.timedelta(0)) == 1  # then collected; the referenced one stays
    assert [r["sha256"] for r in await pool.fetch("SELECT sha256 FROM blobs")] == [kept.sha256]
    assert await blobs.get_bytes(kept.sha256) == b"# kept\n\nA Markdown file.\n"
