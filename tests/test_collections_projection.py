"""Collections and metadata in the projections: the documents row and every chunk row carry the
document's collection and current metadata; a metadata update rewrites both without any new stage work."""

from __future__ import annotations

import asyncpg
import numpy as np

from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors


async def _chunk_meta(pool: asyncpg.Pool, doc: SyntheticDocument) -> set[tuple[str, str]]:
    rows = await pool.fetch("SELECT collection, metadata::text AS m FROM chunk_rows WHERE document_id = $1",
                            doc.document_id)  # fmt: skip
    return {(r["collection"], r["m"]) for r in rows}


async def test_metadata_update_reaches_documents_and_chunk_rows_without_stage_work(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    rng = np.random.default_rng(5)
    doc = SyntheticDocument(store, blobs)
    await doc.upload(b"finance report", collection="finance", metadata={"dept": "finance", "year": "2025"})
    await doc.convert()
    await doc.chunk(["one", "two", "three"])
    await doc.embed(random_unit_vectors(rng, 3, 16), "local:m16")
    await catch_up_all(pool, dsn)
    row = await pool.fetchrow("SELECT collection, metadata, status FROM documents WHERE document_id = $1",
                              doc.document_id)  # fmt: skip
    assert row is not None
    assert (row["collection"], row["metadata"], row["status"]) == (
        "finance", {"dept": "finance", "year": "2025"}, "searchable",
    )  # fmt: skip
    assert await _chunk_meta(pool, doc) == {("finance", '{"dept": "finance", "year": "2025"}')}
    before = await pool.fetchval("SELECT max(position) FROM events")
    embedded = await pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1", doc.document_id)

    await doc.update_metadata({"year": None, "tags": ["q4"]})
    await catch_up_all(pool, dsn)
    row = await pool.fetchrow("SELECT metadata, status FROM documents WHERE document_id = $1", doc.document_id)
    assert row is not None and (row["metadata"], row["status"]) == ({"dept": "finance", "tags": ["q4"]}, "searchable")
    assert await _chunk_meta(pool, doc) == {("finance", '{"dept": "finance", "tags": ["q4"]}')}
    # The update is the only event: nothing was converted, chunked or embedded again.
    after = await pool.fetch("SELECT type FROM events WHERE position > $1", before)
    assert [r["type"] for r in after] == ["DocumentMetadataUpdated"]
    assert await pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1", doc.document_id) == embedded

    await doc.update_metadata({"only": "this"}, mode="replace")
    await catch_up_all(pool, dsn)
    assert await _chunk_meta(pool, doc) == {("finance", '{"only": "this"}')}
    assert await pool.fetchval("SELECT metadata FROM documents WHERE document_id = $1", doc.document_id) == {
        "only": "this"
    }


async def test_a_document_uploaded_again_after_deletion_starts_with_the_new_uploads_metadata(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    doc = SyntheticDocument(store, blobs)
    await doc.upload(b"x", metadata={"old": "1"})
    await doc.delete()
    await doc.upload(b"x", metadata={"new": "2"})
    await catch_up_all(pool, dsn)
    assert await pool.fetchval("SELECT metadata FROM documents WHERE document_id = $1", doc.document_id) == {"new": "2"}
    assert await pool.fetchval("SELECT metadata FROM index_documents WHERE document_id = $1", doc.document_id) == {
        "new": "2"
    }
