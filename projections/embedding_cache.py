"""The ``embedding_cache`` projection: every embedding made, by (model, dimensions, text sha256),
one row per contributing document, so the embed stage can reuse vectors for text it has seen.

Filled from every ``ChunksEmbedded`` (current chunk set or not: the vectors are valid for their
text either way) and every ``EmbeddingsCached`` (vectors paid for by an embedding that did not
complete; the payload names each row's text hash) unless the document is deleted at that point;
a document's rows go when it is deleted. Keeping rows per document makes the table independent of
deletion order, so a replay after blob garbage collection gives the same table (the skipped rows
are the deleted ones).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from app.catalogue import events as ev
from app.catalogue.codec import decode_as
from events.blobs import BlobStore
from events.errors import BlobNotFound
from events.sqlfiles import query
from events.types import RecordedEvent
from projections import copy
from projections.base import Conn, Projector, as_uuid, document_id_of, in_own_stream, unique_ids
from projections.lineage import ChunkSetRows, DeletionTimeline, chunk_sets, chunked_events

logger = logging.getLogger(__name__)
COLUMNS = ["model", "dimensions", "text_sha256", "document_id", "embedding"]
HANDLED = frozenset({ev.ChunksEmbedded.TYPE, ev.EmbeddingsCached.TYPE, ev.DocumentDeleted.TYPE})
BLOB_READS = 8  # concurrent blob reads per batch


@dataclass
class Embedded:
    """One ChunksEmbedded (or EmbeddingsCached) worth projecting, with its vectors once loaded."""

    event: RecordedEvent
    document_id: str
    result: ev.ChunksEmbedded | ev.EmbeddingsCached
    matrix: np.ndarray | None = None
    rows: ChunkSetRows | None = None
    problem: str | None = None  # why the vectors blob cannot be read as this set's vectors

    @classmethod
    def of(cls, event: RecordedEvent, document_id: str) -> Embedded:
        if event.type == ev.EmbeddingsCached.TYPE:
            return cls(event, document_id, decode_as(event, ev.EmbeddingsCached))
        return cls(event, document_id, decode_as(event, ev.ChunksEmbedded))

    @property
    def model(self) -> str:
        return self.result.model

    @property
    def chunk_set_id(self) -> str:
        return self.result.chunk_set_id


async def load_matrix(blobs: BlobStore, result: ev.ChunksEmbedded | ev.EmbeddingsCached) -> np.ndarray:
    """The (rows, dimensions) float32 matrix of a ChunksEmbedded or EmbeddingsCached."""
    raw = await blobs.get_bytes(result.vectors.sha256)
    dims = result.dimensions
    if dims <= 0 or len(raw) % (4 * dims):
        raise ValueError(f"vectors blob of {len(raw)} bytes is not float32 rows of {dims} dimensions")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, dims)


async def load_all(blobs: BlobStore, items: list[Embedded]) -> tuple[list[Embedded], list[Embedded]]:
    """Load every item's vectors; returns (loaded, items whose blob is missing)."""
    gate = asyncio.Semaphore(BLOB_READS)
    missing: list[Embedded] = []

    async def one(item: Embedded) -> None:
        async with gate:
            try:
                item.matrix = await load_matrix(blobs, item.result)
            except BlobNotFound:
                missing.append(item)
            except ValueError as exc:
                item.problem = str(exc)

    await asyncio.gather(*(one(i) for i in items))
    return [i for i in items if i not in missing], missing


class EmbeddingCacheProjector(Projector):
    name = "embedding_cache"
    tables = ("embedding_cache",)

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in HANDLED]
        ids = unique_ids(relevant)
        if not ids:
            return
        timeline = await DeletionTimeline.load(conn, ids)
        items: list[Embedded] = []
        for e in relevant:
            doc = document_id_of(e)
            if doc is None or not in_own_stream(e, doc):
                continue
            if e.type == ev.DocumentDeleted.TYPE:
                await self._flush(conn, items, relevant, timeline)
                items = []
                await conn.execute(query("projections", "embedding_cache_delete_document"), doc)
            elif not timeline.deleted_at(doc, e.stream_version):
                items.append(Embedded.of(e, doc))
        await self._flush(conn, items, relevant, timeline)

    async def _flush(
        self, conn: Conn, items: list[Embedded], batch: list[RecordedEvent], timeline: DeletionTimeline
    ) -> None:
        if not items:
            return
        embedded = [i for i in items if isinstance(i.result, ev.ChunksEmbedded)]
        found = await chunk_sets(conn, {i.chunk_set_id: i.document_id for i in embedded}, chunked_events(batch))
        for i in items:
            if isinstance(i.result, ev.EmbeddingsCached):  # its payload names each row's text
                i.rows = ChunkSetRows(list(range(len(i.result.text_sha256))), list(i.result.text_sha256))
            else:
                i.rows = found.get(i.chunk_set_id, ChunkSetRows([], []))
        loaded, missing = await load_all(self.blobs, items)
        for i in missing:
            if not timeline.deleted_after(i.document_id, i.event.stream_version):
                raise BlobNotFound(
                    f"vectors blob {i.result.vectors.sha256} of document {i.document_id} is missing "
                    "although the document was never deleted; restore the blob store"
                )
        # Keep the first embedding of each (model, dimensions, text, document): earlier rows in the
        # table win (ON CONFLICT DO NOTHING semantics), then earlier rows of this batch.
        keys = [(i.model, i.result.dimensions, h, i.document_id)
                for i in loaded if i.rows for h in i.rows.text_sha256]  # fmt: skip
        existing = {
            (r["model"], r["dimensions"], r["text_sha256"], str(r["document_id"]))
            for r in await conn.fetch(
                query("projections", "embedding_cache_existing"),
                [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys],
            )
        } if keys else set()  # fmt: skip
        bodies: list[bytes] = []
        for i in loaded:
            assert i.rows is not None
            dims = i.result.dimensions
            if (i.matrix is None or i.matrix.shape[0] != len(i.rows.text_sha256) or i.matrix.shape[1] != dims
                    or not np.isfinite(i.matrix).all()):  # fmt: skip
                # Unusable vectors: the index projection records a ChunksEmbedded's problem; these are
                # only skipped (the texts are embedded again when needed).
                if isinstance(i.result, ev.EmbeddingsCached):
                    logger.warning("paid-for vectors of document %s not cached: %s", i.document_id,
                                   i.problem or "the blob does not match the event", extra={
                                       "action": "project_embedding_cache", "document_id": i.document_id,
                                       "event_id": str(i.event.event_id), "model": i.model})  # fmt: skip
                continue
            take: list[int] = []
            for row, h in enumerate(i.rows.text_sha256):
                key = (i.model, dims, h, i.document_id)
                if key not in existing:
                    existing.add(key)
                    take.append(row)
            if not take:
                continue
            doc = as_uuid(i.document_id)
            assert doc is not None
            n = len(take)
            bodies.append(
                copy.encode_rows(
                    n,
                    [
                        ("text", i.model),
                        ("int4", dims),
                        ("text", [i.rows.text_sha256[t] for t in take]),
                        ("uuid", [doc] * n),
                        ("vector", i.matrix[take]),
                    ],
                )
            )
        if bodies:
            await conn.copy_to_table("embedding_cache", source=copy.stream(bodies), format="binary", columns=COLUMNS)
