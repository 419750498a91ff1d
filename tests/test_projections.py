"""Projections: status machine, chunks/vectors replacement, costs, cache, idempotence, exactly once."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from app.catalogue.ids import chunk_id_for
from events import EventStore, PgBlobStore
from projections.runner import all_projectors, catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


async def searchable_doc(
    store: EventStore,
    blobs: PgBlobStore,
    rng: np.random.Generator,
    n: int = 5,
    model: str = "local:m384",
    dims: int = 384,
) -> SyntheticDocument:
    doc = SyntheticDocument(store, blobs)
    await doc.upload(doc.document_id.encode())
    await doc.convert(pages=2)
    await doc.chunk([f"chunk {i} of {doc.document_id}" for i in range(n)])
    await doc.embed(random_unit_vectors(rng, n, dims), model)
    return doc


async def doc_row(pool: asyncpg.Pool, doc: SyntheticDocument) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM documents WHERE document_id = $1", doc.document_id)
    assert row is not None
    return row


async def test_status_machine_to_searchable(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, rng: np.random.Generator
) -> None:
    doc = SyntheticDocument(store, blobs, filename="report.pdf")
    await doc.upload()
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["current_stage"], row["filename"]) == ("uploaded", "convert", "report.pdf")
    await doc.convert(pages=7, seconds=2.0)
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["current_stage"], row["page_count"], row["backend"]) == (
        "converted",
        "chunk",
        7,
        "local",
    )
    assert float(row["total_cost_usd"]) == pytest.approx(2.0 * 0.0000131)
    await doc.chunk(["alpha", "beta", "gamma"])
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["chunk_count"], row["current_stage"]) == ("chunked", 3, "embed")
    await doc.embed(random_unit_vectors(rng, 3, 384), "local:m384")
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["current_stage"], row["embedding_model"]) == ("searchable", None, "local:m384")
    assert row["uploaded_at"] <= row["converted_at"] <= row["chunked_at"] <= row["embedded_at"]
    chunks = await pool.fetch("SELECT * FROM chunks WHERE document_id = $1 ORDER BY ordinal", doc.document_id)
    assert [c["text"] for c in chunks] == ["alpha", "beta", "gamma"]
    assert chunks[0]["pages"] == [1] and chunks[0]["heading_path"] == ["Synthetic", "Section 0"]
    assert chunks[1]["chunk_id"] == chunk_id_for(doc.chunk_set_id or "", 1)
    assert await pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1", doc.document_id) == 3
    assert await pool.fetchval("SELECT count(*) FROM cost_ledger WHERE document_id = $1", doc.document_id) == 1
    assert await pool.fetchval("SELECT count(*) FROM embedding_cache WHERE document_id = $1", doc.document_id) == 3


async def test_vectors_round_trip_exactly(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, rng: np.random.Generator
) -> None:
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.chunk(["a", "b", "c", "d"])
    matrix = random_unit_vectors(rng, 4, 16)
    await doc.embed(matrix, "openai:tiny")
    await catch_up_all(pool, dsn)
    rows = await pool.fetch(
        "SELECT c.ordinal, v.embedding FROM vectors v JOIN chunks c USING (chunk_id) ORDER BY c.ordinal"
    )
    got = np.stack(
        [np.asarray(r["embedding"].to_numpy() if hasattr(r["embedding"], "to_numpy") else r["embedding"]) for r in rows]
    )
    np.testing.assert_array_equal(got, matrix)
    cached = await pool.fetch("SELECT text_sha256, embedding FROM embedding_cache ORDER BY text_sha256")
    assert len(cached) == 4


async def test_failures_final_and_not(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> None:
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.fail("convert", "Timeout", "conversion took longer than 300 s", final=False)
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["attempts"], row["error_class"]) == ("uploaded", 1, "Timeout")
    await doc.fail("convert", "PasswordProtected", "the PDF is encrypted", final=True, attempt=2)
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["failed_stage"], row["last_error"]) == ("failed", "convert", "the PDF is encrypted")
    assert row["current_stage"] is None and row["failed_at"] is not None


async def test_rechunk_switches_chunks_and_vectors_only_when_the_new_set_is_embedded(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, rng: np.random.Generator
) -> None:
    doc = await searchable_doc(store, blobs, rng, n=4)
    other = await searchable_doc(store, blobs, rng, n=2)
    old_set = doc.chunk_set_id

    async def count(table: str, document: SyntheticDocument = doc) -> int:
        return int(await pool.fetchval(f"SELECT count(*) FROM {table} WHERE document_id = $1", document.document_id))

    await doc.request("chunk", chunk_size=64)
    await doc.chunk(["x", "y"], chunk_size=64)
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["chunk_count"], row["chunk_size"]) == ("chunked", 2, 64)
    # The old set keeps answering until the new one has vectors: never neither.
    assert (await count("chunks"), await count("vectors")) == (4, 4)
    sql = "SELECT DISTINCT chunk_set_id::text FROM chunks WHERE document_id = $1"
    served = await pool.fetchval(sql, doc.document_id)
    assert served == old_set
    # Late vectors of the old set (a retried job) may refresh it, but it is still the old set.
    await doc.embed(random_unit_vectors(rng, 4, 384), "local:m384", chunk_set_id=old_set)
    await catch_up_all(pool, dsn)
    assert (await count("chunks"), await count("vectors")) == (4, 4)
    assert (await doc_row(pool, doc))["status"] == "chunked"
    await doc.embed(random_unit_vectors(rng, 2, 384), "local:m384")
    await catch_up_all(pool, dsn)
    assert (await doc_row(pool, doc))["status"] == "searchable"
    assert (await count("chunks"), await count("vectors")) == (2, 2)
    assert await count("vectors_history") == 8  # the old set's vectors, as first made and as refreshed
    assert (await count("chunks", other), await count("vectors", other)) == (2, 2)
    # A set older than the serving one never serves again, however late its vectors come.
    await doc.embed(random_unit_vectors(rng, 4, 384), "local:m384", chunk_set_id=old_set)
    await catch_up_all(pool, dsn)
    assert (await count("chunks"), await count("vectors")) == (2, 2)


async def test_delete_drops_chunks_vectors_cache(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, rng: np.random.Generator
) -> None:
    doc = await searchable_doc(store, blobs, rng)
    keep = await searchable_doc(store, blobs, rng)
    await doc.delete()
    await catch_up_all(pool, dsn)
    row = await doc_row(pool, doc)
    assert (row["status"], row["deleted_at"] is not None) == ("deleted", True)
    for table in ("chunks", "vectors", "embedding_cache"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE document_id = $1", doc.document_id) == 0
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE document_id = $1", keep.document_id) == 5
    assert await pool.fetchval("SELECT count(*) FROM cost_ledger WHERE document_id = $1", doc.document_id) == 1


async def test_per_model_hnsw_index_and_mixed_dimensions(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, rng: np.random.Generator
) -> None:
    await searchable_doc(store, blobs, rng, model="local:m384", dims=384)
    await searchable_doc(store, blobs, rng, model="openai:m1536", dims=1536)
    await catch_up_all(pool, dsn)
    indexes = {
        r["indexdef"]
        for r in await pool.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'vectors' AND indexdef LIKE '%hnsw%'"
        )
    }
    assert len(indexes) == 2
    assert any("vector(384)" in i and "'local:m384'" in i for i in indexes)
    assert any("vector(1536)" in i and "'openai:m1536'" in i for i in indexes)
    models = {r["model"]: r["dimensions"] for r in await pool.fetch("SELECT * FROM embedding_models")}
    assert models == {"local:m384": 384, "openai:m1536": 1536}


async def test_applying_a_batch_twice_changes_nothing(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, rng: np.random.Generator
) -> None:
    from tests.test_replay import projection_hashes

    doc = await searchable_doc(store, blobs, rng)
    await doc.fail("embed", "RateLimited", "429", final=False)
    await doc.delete()
    await searchable_doc(store, blobs, rng)
    await catch_up_all(pool, dsn)
    before = await projection_hashes(pool)
    events = await store.read_all(0, 10_000)
    async with pool.acquire() as conn:
        for projector in all_projectors(blobs):
            async with conn.transaction():
                await projector.apply(conn, events)
                await projector.apply(conn, events[3:7])
    assert await projection_hashes(pool) == before


async def test_catch_up_to_head_waits_for_events_an_open_transaction_holds_back(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    """The safe horizon is the server's oldest open transaction, whatever it does (here one that only
    took a transaction id: a bulk load, an index build, another database's job): ``catch_up_all``
    returns with the upload held back, ``catch_up_to_head`` waits for it (the bench used the first
    and reported documents searchable in the log with no rows in the projections)."""
    from projections.runner import catch_up_to_head

    blocker = await asyncpg.connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.fetchval("SELECT pg_current_xact_id()")
        doc = SyntheticDocument(store, blobs, filename="held.pdf")
        await doc.upload()
        await catch_up_all(pool, dsn)
        assert await pool.fetchval("SELECT count(*) FROM documents WHERE document_id = $1", doc.document_id) == 0
        with pytest.raises(TimeoutError, match="open transaction"):
            await catch_up_to_head(pool, timeout=0.3)
        waiting = asyncio.create_task(catch_up_to_head(pool, timeout=30))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await tx.commit()
        assert await asyncio.wait_for(waiting, 30) >= 1
    finally:
        await blocker.close()
    assert (await doc_row(pool, doc))["status"] == "uploaded"
