"""Replay: rebuild every projection from the log and blob store alone."""

from __future__ import annotations

import asyncpg

HASHED = {
    "documents": "document_id",
    "chunk_sets": "document_id",
    "chunks": "chunk_id",
    "vector_documents": "document_id",
    "vector_sets": "document_id, model",
    "embedding_models": "model",
    "vectors": "chunk_id, model",
    "cost_ledger": "position",
    "embedding_cache": "model, dimensions, text_sha256, document_id",
}


async def projection_hashes(pool: asyncpg.Pool) -> dict[str, str]:
    """md5 over every row of every projection table, in key order."""
    out = {}
    for table, key in HASHED.items():
        out[table] = await pool.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY {key}), '')) || ':' || count(*) FROM {table} t"
        )
    return out
