"""Search paths get the plan they claim, every time (issue 16 item 5): after five executions of a prepared
statement PostgreSQL may switch to a generic plan, and a generic plan for ``ORDER BY embedding <=> $1
LIMIT k`` cannot use the model's partial expression index: an exact scan (recall 1.0, ~50 ms at 100k).
Each product path is executed more than five times through the product's pool (one connection, so the
prepared statement and PL/pgSQL's cached plans are reused), and after each execution the HNSW index's
scan counter (``pg_stat_get_xact_numscans``: this transaction's own, nothing else can move it) must have
grown: a plan check, not a timing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import numpy as np
import pytest_asyncio

from app.services.search import SearchFilters, search_rows, search_vector
from events import EventStore, PgBlobStore
from events.connection import create_pool
from events.types import DbConn
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors

MODEL = "local:plans32"
DIMS = 32
DOCUMENTS = 30
PER_DOCUMENT = 100
RUNS = 7  # more than the five custom plans PostgreSQL makes before it may choose a generic one


@pytest_asyncio.fixture(loop_scope="session")
async def indexed(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> tuple[np.ndarray, list[str]]:
    """3,000 vectors in 30 documents under one model, projected (HNSW index made by the projection)."""
    rng = np.random.default_rng(7)
    vectors = random_unit_vectors(rng, DOCUMENTS * PER_DOCUMENT, DIMS)
    documents = []
    for d in range(DOCUMENTS):
        doc = SyntheticDocument(store, blobs, filename=f"plan-{d:02d}.pdf")
        await doc.upload(doc.document_id.encode())
        await doc.chunk([f"plan chunk {d} {i} word{i % 13}" for i in range(PER_DOCUMENT)])
        await doc.embed(vectors[d * PER_DOCUMENT : (d + 1) * PER_DOCUMENT], MODEL)
        documents.append(doc.document_id)
    await catch_up_all(pool, dsn)
    # ef_search 40 (the index's default): at 3,000 rows an ef_search of 200 makes an exact scan the
    # planner's honest choice, and this test is about plans that stop being chosen on the merits.
    await pool.execute("UPDATE settings SET value = '40' WHERE key = 'hnsw_ef_search'")
    await pool.execute("ANALYZE")
    return vectors, documents


@pytest_asyncio.fixture(loop_scope="session")
async def one_connection(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """The product's pool (codecs, session settings, statement cache) with a single connection."""
    p = await create_pool(dsn, min_size=1, max_size=1)
    try:
        yield p
    finally:
        await p.close()


async def hnsw_scans(conn: DbConn) -> int:
    """Scans of the HNSW indexes in the current transaction (PostgreSQL's per-transaction counters:
    nothing outside this transaction can move them)."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(pg_stat_get_xact_numscans(i.indexrelid)), 0) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'vectors'::regclass "
            "AND c.relname LIKE 'vectors_hnsw_%'"
        )
    )


Run = Callable[[DbConn, np.ndarray], Awaitable[object]]


async def scans_per_run(pool: asyncpg.Pool, run: Run, queries: np.ndarray) -> list[int]:
    """How many HNSW scans each of RUNS executions of ``run`` made, all on the pool's one connection
    (in one transaction, so the counters are this test's alone)."""
    counts = []
    async with pool.acquire() as conn, conn.transaction():
        for q in queries[:RUNS]:
            before = await hnsw_scans(conn)
            await run(conn, q)
            counts.append(await hnsw_scans(conn) - before)
    return counts


def queries_near(vectors: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(11)
    q = vectors[rng.integers(0, len(vectors), RUNS)] + 0.05 * rng.standard_normal((RUNS, DIMS)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


async def test_search_chunks_uses_hnsw_every_time(
    indexed: tuple[np.ndarray, list[str]], one_connection: asyncpg.Pool
) -> None:
    queries = queries_near(indexed[0])
    counts = await scans_per_run(one_connection, lambda c, q: search_vector(c, q, 10, MODEL), queries)
    assert all(c >= 1 for c in counts), counts


async def test_hybrid_and_vector_modes_use_hnsw_every_time(
    indexed: tuple[np.ndarray, list[str]], one_connection: asyncpg.Pool
) -> None:
    queries = queries_near(indexed[0])
    for mode in ("vector", "hybrid"):

        async def run(c: DbConn, q: np.ndarray, mode: str = mode) -> object:
            return await search_rows(c, "plan chunk word3", q, 10, MODEL, mode)

        counts = await scans_per_run(one_connection, run, queries)
        assert all(c >= 1 for c in counts), (mode, counts)


async def test_broad_filter_uses_hnsw_every_time(
    indexed: tuple[np.ndarray, list[str]], one_connection: asyncpg.Pool
) -> None:
    """A filter leaving more vectors than an exact scan should read goes through the index (iterative scan)."""
    vectors, documents = indexed
    await one_connection.execute("UPDATE settings SET value = '500' WHERE key = 'search_exact_limit'")
    broad = SearchFilters(document_ids=documents[:25])  # 2,500 of 3,000 vectors
    counts = await scans_per_run(
        one_connection,
        lambda c, q: search_rows(c, "plan", q, 10, MODEL, "vector", None, broad),
        queries_near(vectors),
    )
    assert all(c >= 1 for c in counts), counts
