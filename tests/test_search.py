"""Search: per-model HNSW index, active-model switch after full coverage, search_chunks()."""

from __future__ import annotations

import asyncpg
import numpy as np

from app.search import active_model, search_vector
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors


async def make_doc(store: EventStore, blobs: PgBlobStore, vectors: np.ndarray, model: str) -> SyntheticDocument:
    doc = SyntheticDocument(store, blobs, filename=f"{model}.pdf")
    await doc.upload(doc.document_id.encode())
    await doc.chunk([f"text {i}" for i in range(len(vectors))])
    await doc.embed(vectors, model)
    return doc


async def test_search_finds_nearest_and_uses_hnsw(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(1)
    vecs = random_unit_vectors(rng, 50, 32)
    doc = await make_doc(store, blobs, vecs, "local:m32")
    await catch_up_all(pool, dsn)
    hits = await search_vector(pool, vecs[17], 3, "local:m32")
    assert hits[0].document_id == doc.document_id and hits[0].ordinal == 17
    assert abs(hits[0].score - 1.0) < 1e-5 and hits[0].text == "text 17"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT chunk_id FROM vectors WHERE model = 'local:m32' "
                "ORDER BY embedding::vector(32) <=> $1::vector(32) LIMIT 5",
                vecs[0],
            )
        )
    assert "vectors_hnsw_" in plan


async def test_model_switch_happens_once_new_model_covers_everything(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(2)
    a = await make_doc(store, blobs, random_unit_vectors(rng, 4, 16), "local:old")
    b = await make_doc(store, blobs, random_unit_vectors(rng, 4, 16), "local:old")
    await catch_up_all(pool, dsn)
    assert await active_model(pool) == ("local:old", 16)
    await a.embed(random_unit_vectors(rng, 4, 24), "openai:new")
    await catch_up_all(pool, dsn)
    assert await active_model(pool) == ("local:old", 16)  # new model covers 1 of 2 documents
    await b.embed(random_unit_vectors(rng, 4, 24), "openai:new")
    await catch_up_all(pool, dsn)
    assert await active_model(pool) == ("openai:new", 24)
    rows = await pool.fetch("SELECT * FROM search_chunks($1::vector, 3)", random_unit_vectors(rng, 1, 24)[0])
    assert len(rows) == 3
