"""Search: per-model HNSW index, active-model switch after full coverage, search_chunks()."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import numpy as np
import pytest

from app.config import Settings
from app.services.search import active_model, search_vector
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


@pytest.mark.local_models
async def test_search_finds_known_facts_in_corpus_with_real_local_embedder(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, corpus: Path
) -> None:
    from app.embedders import get_embedder
    from app.services.search import search

    embedder = get_embedder("local:all-MiniLM-L6-v2")
    docs = {}
    for name in ("wiki.md", "duck.md", "mixed.md"):
        text = (corpus / "md" / name).read_text(encoding="utf-8")
        paragraphs = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 20]
        doc = SyntheticDocument(store, blobs, filename=name)
        await doc.upload(text.encode())
        await doc.chunk(paragraphs)
        result = await embedder.embed(paragraphs)
        await doc.embed(result.vectors, embedder.model)
        docs[name] = doc
    await catch_up_all(pool, dsn)
    hits = await search(pool, Settings(), "In which year was IBM founded?", k=3)
    assert hits[0].filename == "wiki.md"
    assert any("founded in 1911" in h.text for h in hits)  # the founding paragraph is in the top 3
    hits = await search(pool, Settings(), "What does the duck like to eat?", k=3)
    assert hits[0].filename == "duck.md" and "eat" in hits[0].text.lower()
    assert all(set(h.to_json()) >= {"document_id", "filename", "text", "pages", "score"} for h in hits)
