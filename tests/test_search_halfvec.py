"""Models above 2000 dimensions: text-embedding-3-large (3072) gets a halfvec HNSW index and is searched
through it; a model above 4000 is a recorded problem, never a stalled vectors projection."""

from __future__ import annotations

import asyncpg
import numpy as np

from app.services.search import search_vector
from events import EventStore, PgBlobStore
from projections.replay import replay
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors

LARGE = "openai:text-embedding-3-large"


async def make_doc(store: EventStore, blobs: PgBlobStore, vectors: np.ndarray, model: str) -> SyntheticDocument:
    doc = SyntheticDocument(store, blobs, filename=f"{model}.pdf")
    await doc.upload(doc.document_id.encode())
    await doc.chunk([f"{model} text {i}" for i in range(len(vectors))])
    await doc.embed(vectors, model)
    return doc


async def behind(pool: asyncpg.Pool, projection: str) -> int:
    checkpoint = await pool.fetchval("SELECT position FROM subscriptions WHERE name = $1", projection)
    assert checkpoint is not None, f"no subscription {projection}"
    return int(await pool.fetchval("SELECT count(*) FROM events WHERE position > $1", checkpoint))


async def test_3072_dimensions_are_indexed_as_halfvec_and_searched_through_the_index(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(7)
    large = [await make_doc(store, blobs, random_unit_vectors(rng, 30, 3072), LARGE) for _ in range(2)]
    small = await make_doc(store, blobs, random_unit_vectors(rng, 5, 384), "local:all-MiniLM-L6-v2")
    await catch_up_all(pool, dsn)
    assert await behind(pool, "projection:index") == 0
    row = await pool.fetchrow("SELECT dimensions, index_name FROM embedding_models WHERE model = $1", LARGE)
    assert row is not None and row["dimensions"] == 3072
    definition = await pool.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", row["index_name"])
    assert "halfvec(3072)" in definition and "halfvec_cosine_ops" in definition
    assert await pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1", small.document_id) == 5

    query = np.frombuffer(await blobs.get_bytes(await vector_blob(pool, large[1].document_id)), "<f4")
    query = query.reshape(30, 3072)[11]
    hits = await search_vector(pool, query, 3, LARGE)
    assert hits[0].document_id == large[1].document_id and hits[0].ordinal == 11
    assert abs(hits[0].score - 1.0) < 1e-3  # half precision: the score is close, not exact
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a few rows: make the planner show it can use it
        plan = "\n".join(r[0] for r in await conn.fetch("SELECT * FROM explain_search_chunks($1, 3, $2)", query, LARGE))
    assert f"Index Scan using {row['index_name']}" in plan, plan

    await replay(pool, dsn, ["index"], progress=False)  # bulk load, then the indexes (in the shadow schema)
    assert (await search_vector(pool, query, 1, LARGE))[0].ordinal == 11
    definition = await pool.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", row["index_name"])
    assert "halfvec(3072)" in definition


async def test_a_model_too_large_to_index_is_a_problem_and_the_projection_goes_on(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(8)
    huge = await make_doc(store, blobs, random_unit_vectors(rng, 3, 4096), "openai:huge")
    after = await make_doc(store, blobs, random_unit_vectors(rng, 4, 3072), LARGE)
    await catch_up_all(pool, dsn)
    assert await behind(pool, "projection:index") == 0
    problem = await pool.fetchval("SELECT problem FROM vector_problems WHERE document_id = $1", huge.document_id)
    assert "at most 4000" in problem and "@N" in problem
    assert await pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1", after.document_id) == 4
    assert await pool.fetchval("SELECT count(*) FROM embedding_models WHERE model = 'openai:huge'") == 0


async def vector_blob(pool: asyncpg.Pool, document_id: str) -> str:
    return str(await pool.fetchval(
        "SELECT data -> 'vectors' ->> 'sha256' FROM events WHERE type = 'ChunksEmbedded' AND stream_id = $1",
        f"document-{document_id}",
    ))  # fmt: skip


async def as_of(pool: asyncpg.Pool, query: np.ndarray, k: int, model: str, at: int) -> list[tuple[int, str, float]]:
    rows = await pool.fetch("SELECT * FROM search_chunks_as_of($1, $2, $3, $4)", query, k, model, at)
    return [(r["ordinal"], r["text"], r["score"]) for r in rows]


async def halfvec_score(pool: asyncpg.Pool, a: np.ndarray, b: np.ndarray, dims: int) -> float:
    """The cosine similarity pgvector gives for ``a`` and ``b`` taken as halfvec(dims), as the index does."""
    return float(await pool.fetchval(f"SELECT 1 - ($1::vector::halfvec({dims}) <=> $2::vector::halfvec({dims}))",
                                     a, b))  # fmt: skip


async def test_search_as_of_a_moment_scores_3072_dimensions_as_halfvec_like_search_does(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(9)
    first = random_unit_vectors(rng, 6, 3072)
    doc = await make_doc(store, blobs, first, LARGE)
    await catch_up_all(pool, dsn)
    before = int(await pool.fetchval("SELECT max(position) FROM events"))
    await doc.chunk([f"rechunked {i}" for i in range(4)])  # a new chunk set replaces the first one
    second = random_unit_vectors(rng, 4, 3072)
    await doc.embed(second, LARGE)
    await catch_up_all(pool, dsn)
    now = int(await pool.fetchval("SELECT max(position) FROM events"))
    assert await pool.fetchval("SELECT count(*) FROM vectors_history WHERE model = $1", LARGE) == 6

    query = (second[2] + 0.3 * second[1]).astype(np.float32)
    current = [(h.ordinal, h.text, h.score) for h in await search_vector(pool, query, 4, LARGE)]
    assert await as_of(pool, query, 4, LARGE, now) == current  # the same moment, the same scores exactly
    expected = [await halfvec_score(pool, second[o], query, 3072) for o, _t, _s in current]
    assert [s for _o, _t, s in current] == expected

    old_query = (first[4] + 0.2 * first[0]).astype(np.float32)
    earlier = await as_of(pool, old_query, 2, LARGE, before)
    assert [(o, t) for o, t, _s in earlier] == [(4, f"{LARGE} text 4"), (0, f"{LARGE} text 0")]
    assert [s for _o, _t, s in earlier] == [await halfvec_score(pool, first[o], old_query, 3072) for o in (4, 0)]
