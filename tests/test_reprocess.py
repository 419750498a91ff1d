"""Reprocess: selection (read-only --where), requests appended, a new chunk set replaces the old
in the projections and in search while the old one stays in the log."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from app.services.search import search_vector
from app.services.selection import Selection, SelectionError, select_documents
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors
from tests.support import request


async def test_reprocess_chunk_size_new_chunks_vectors_search(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(9)
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.convert(pages=4)
    old_set = await doc.chunk([f"long chunk {i}" for i in range(4)], chunk_size=256)
    await doc.embed(random_unit_vectors(rng, 4, 16), "local:m16")
    await catch_up_all(pool, dsn)
    ids = await select_documents(pool, Selection(where="page_count = 4 AND chunk_size = 256"))
    assert ids == [doc.document_id]
    with pytest.raises(SelectionError):
        await select_documents(pool, Selection(where="true; DELETE FROM documents"))
    with pytest.raises(SelectionError, match="permission denied"):
        await select_documents(pool, Selection(where="(SELECT count(*) FROM nextval('events_position_seq')) > 0"))
    assert await request(store, "chunk", ids, chunk_size=64) == 1
    # The worker's part (driven by hand here): a new chunk set, then its vectors.
    new_set = await doc.chunk([f"short {i}" for i in range(8)], chunk_size=64)
    new_vectors = random_unit_vectors(rng, 8, 16)
    await doc.embed(new_vectors, "local:m16")
    await catch_up_all(pool, dsn)
    assert {str(r[0]) for r in await pool.fetch("SELECT DISTINCT chunk_set_id FROM chunks")} == {new_set}
    assert await pool.fetchval("SELECT count(*) FROM vectors") == 8
    hit = (await search_vector(pool, new_vectors[5], 1, "local:m16"))[0]
    assert (hit.text, hit.ordinal) == ("short 5", 5)
    history = await pool.fetch(
        "SELECT result_id FROM v_stage_events WHERE document_id = $1 AND stage = 'chunk' ORDER BY position",
        doc.document_id,
    )
    assert [r["result_id"] for r in history] == [old_set, new_set]
    requested = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'ChunkingRequested'")
    assert requested == 1
