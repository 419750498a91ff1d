"""Managed PostgreSQL (issue 11, item 12): pgvector installed in another schema than ``public``, as
Supabase does (``extensions``). Migrations, the pool's codec, the vectors projection, search, the
analyst grant and a replay all have to find it there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest_asyncio

from app.config import Settings
from app.db import open_pool, throwaway_database
from app.services.search import search_vector
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors


@pytest_asyncio.fixture(loop_scope="session")
async def extensions_db(pg_admin_dsn: str) -> AsyncIterator[str]:
    """An empty database with pgvector installed WITH SCHEMA extensions, before any migration."""

    async def install(conn: asyncpg.Connection) -> None:
        await conn.execute("CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions")

    async with throwaway_database(pg_admin_dsn, f"chronos_ext_{uuid.uuid4().hex[:10]}", prepare=install) as dsn:
        yield dsn


async def test_pgvector_in_another_schema(extensions_db: str) -> None:
    dsn, pool = await open_pool(Settings(database_url=extensions_db), max_size=4)
    try:
        schema = await pool.fetchval(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        )
        assert schema == "extensions"  # the migrations' CREATE EXTENSION IF NOT EXISTS left it there
        assert await pool.fetchval(
            "SELECT 'extensions.vector'::regtype = atttypid FROM pg_attribute "
            "WHERE attrelid = 'vectors'::regclass AND attname = 'embedding'"
        )
        store, blobs = EventStore(pool), PgBlobStore(pool)
        rng = np.random.default_rng(12)
        vecs = random_unit_vectors(rng, 20, 16)
        doc = SyntheticDocument(store, blobs, filename="supabase.pdf")
        await doc.upload(b"managed postgres")
        await doc.chunk([f"text {i}" for i in range(20)])
        await doc.embed(vecs, "local:m16")
        await catch_up_all(pool, dsn)
        await store.notifier.flush()
        # The codec is registered for extensions.vector: numpy in, pgvector.Vector out, through the pool.
        back = await pool.fetchval("SELECT embedding FROM vectors v JOIN chunks c USING (chunk_id) WHERE c.ordinal = 3")
        assert np.allclose(back.to_numpy(), vecs[3], atol=1e-6)
        hits = await search_vector(pool, vecs[7], 3, "local:m16")
        assert hits[0].document_id == doc.document_id and hits[0].ordinal == 7
        assert await pool.fetchval("SELECT count(*) FROM search_chunks($1, 3)", vecs[7]) == 3
        assert await pool.fetchval("SELECT has_schema_privilege('chronos_analyst', 'extensions', 'USAGE')")
    finally:
        await pool.close()


async def test_replay_with_pgvector_in_another_schema(extensions_db: str) -> None:
    from projections.replay import replay

    dsn, pool = await open_pool(Settings(database_url=extensions_db), max_size=4)
    try:
        store, blobs = EventStore(pool), PgBlobStore(pool)
        vecs = random_unit_vectors(np.random.default_rng(13), 5, 8)
        doc = SyntheticDocument(store, blobs, filename="replayed.pdf")
        await doc.upload(b"replayed")
        await doc.chunk([f"text {i}" for i in range(5)])
        await doc.embed(vecs, "local:m8")
        await catch_up_all(pool, dsn)
        await replay(pool, dsn, progress=False)
        hits = await search_vector(pool, vecs[2], 1, "local:m8")
        assert hits[0].ordinal == 2
    finally:
        await pool.close()
