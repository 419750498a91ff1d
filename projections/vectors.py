"""The ``vectors`` projection: the embeddings of every document's current chunk set, for every
model that embedded it, in one table (``vector`` without a fixed dimension), with one HNSW index
per model (expression + partial index, made by ``ensure_vector_index`` when the model first
appears). ``vector_sets`` says which models cover which documents (search picks its model from
that: ``v_search_models``); ``vector_documents`` is this projector's own view of each document.

Vectors come from the float32 blob named in ``ChunksEmbedded`` (rows in ordinal order); the chunk
ids from ``domain.chunk_id_for`` over the chunk set's ordinals, which the log itself holds. So
replay makes no model call. A blob may be missing only when the document was deleted (and its blobs
garbage-collected): then the vectors are skipped, as the deletion would drop them anyway.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import domain
from events.blobs import BlobStore
from events.errors import BlobNotFound
from events.sqlfiles import query
from events.types import RecordedEvent
from projections import copy
from projections.base import Conn, Projector, as_uuid, document_id_of, in_own_stream, unique_ids
from projections.lineage import ChunkSetRows, DeletionTimeline, chunk_sets, chunked_events

logger = logging.getLogger(__name__)
_HANDLED = frozenset(
    {domain.DOCUMENT_UPLOADED, domain.DOCUMENT_CHUNKED, domain.CHUNKS_EMBEDDED, domain.DOCUMENT_DELETED}
)
BLOB_READS = 8  # concurrent blob reads per batch
MAX_INDEXED_DIMENSIONS = 4000  # pgvector HNSW: vector up to 2000, halfvec up to 4000 (sql/040_halfvec_vector_index.sql)


@dataclass
class Embedded:
    """One ChunksEmbedded worth projecting, with its vectors once loaded."""

    event: RecordedEvent
    document_id: str
    matrix: np.ndarray | None = None
    rows: ChunkSetRows | None = None
    problem: str | None = None  # why the vectors blob cannot be read as this set's vectors

    @property
    def model(self) -> str:
        return str(self.event.data["model"])

    @property
    def chunk_set_id(self) -> str:
        return str(self.event.data["chunk_set_id"])


async def load_matrix(blobs: BlobStore, data: dict[str, Any]) -> np.ndarray:
    """The (chunk_count, dimensions) float32 matrix of a ChunksEmbedded payload."""
    raw = await blobs.get_bytes(str(data["vectors"]["sha256"]))
    dims = int(data["dimensions"])
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
                item.matrix = await load_matrix(blobs, item.event.data)
            except BlobNotFound:
                missing.append(item)
            except ValueError as exc:
                item.problem = str(exc)

    await asyncio.gather(*(one(i) for i in items))
    return [i for i in items if i not in missing], missing


def check_shape(item: Embedded) -> str | None:
    """Why the vectors cannot be projected, or None."""
    if item.problem is not None:
        return item.problem
    assert item.matrix is not None and item.rows is not None
    n = len(item.rows.ordinals)
    if item.matrix.shape[0] != n:
        return f"vectors blob has {item.matrix.shape[0]} rows for a chunk set of {n} chunks"
    if not np.isfinite(item.matrix).all():
        return "vectors blob holds NaN or infinite values"
    return None


def vector_rows(item: Embedded) -> bytes:
    assert item.matrix is not None and item.rows is not None
    n = len(item.rows.ordinals)
    ids = [domain.chunk_id_for(item.chunk_set_id, o) for o in item.rows.ordinals]
    doc = as_uuid(item.document_id)
    assert doc is not None
    return copy.encode_rows(n, [("uuid", ids), ("text", item.model), ("uuid", [doc] * n), ("vector", item.matrix)])


class VectorsProjector(Projector):
    name = "vectors"
    tables = ("vector_documents", "vector_sets", "embedding_models", "vectors", "vector_problems")

    def __init__(self, blobs: BlobStore, *, defer_indexes: bool = False) -> None:
        self.blobs = blobs
        self.defer_indexes = defer_indexes  # replay: build HNSW indexes once, after the bulk load

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in _HANDLED]
        ids = unique_ids(relevant)
        if not ids:
            return
        states = {
            str(r["document_id"]): dict(r) for r in await conn.fetch(query("projections", "vector_documents_get"), ids)
        }
        drop: set[str] = set()
        embeds: dict[tuple[str, str], Embedded] = {}
        changed: set[str] = set()
        for e in relevant:
            doc = document_id_of(e)
            if doc is None or not in_own_stream(e, doc):
                continue
            s = states.get(doc)
            if s is not None and e.stream_version <= s["stream_version"]:
                continue
            s = dict(s or {"document_id": doc, "chunk_set_id": None, "chunk_count": 0, "deleted": False})
            s.update(stream_version=e.stream_version, position=e.position)
            if e.type == domain.DOCUMENT_UPLOADED:
                s["deleted"] = False
            elif s["deleted"]:
                pass
            elif e.type == domain.DOCUMENT_CHUNKED and e.data.get("chunk_set_id"):
                s.update(chunk_set_id=str(e.data["chunk_set_id"]), chunk_count=len(e.data.get("chunks") or ()))
                drop.add(doc)
                embeds = {k: v for k, v in embeds.items() if k[0] != doc}
            elif e.type == domain.CHUNKS_EMBEDDED:
                if str(e.data.get("chunk_set_id")) == str(s["chunk_set_id"]) and e.data.get("model"):
                    embeds[(doc, str(e.data["model"]))] = Embedded(e, doc)
            elif e.type == domain.DOCUMENT_DELETED:
                s.update(deleted=True, chunk_set_id=None, chunk_count=0)
                drop.add(doc)
                embeds = {k: v for k, v in embeds.items() if k[0] != doc}
            states[doc] = s
            changed.add(doc)
        if not changed:
            return
        if drop:
            await conn.execute(query("projections", "vectors_delete_documents"), list(drop))
            await conn.execute(query("projections", "vector_sets_delete_documents"), list(drop))
            await conn.execute(query("projections", "vector_problems_delete_documents"), list(drop))
        if embeds:
            await self._write_embeds(conn, list(embeds.values()), relevant)
        rows = [states[d] for d in changed]
        await conn.execute(query("projections", "vector_documents_delete"), list(changed))
        await conn.execute(
            query("projections", "vector_documents_insert"),
            [r["document_id"] for r in rows],
            [as_uuid(r["chunk_set_id"]) for r in rows],
            [r["chunk_count"] for r in rows],
            [r["deleted"] for r in rows],
            [r["stream_version"] for r in rows],
            [r["position"] for r in rows],
        )

    async def _write_embeds(self, conn: Conn, items: list[Embedded], batch: list[RecordedEvent]) -> None:
        """Replace each (document, model)'s vectors with the new set -- only once the new set is known
        to be applicable: one that is not keeps the old vectors and is recorded in vector_problems."""
        found = await chunk_sets(conn, {i.chunk_set_id: i.document_id for i in items}, chunked_events(batch))
        for i in items:
            i.rows = found.get(i.chunk_set_id, ChunkSetRows([], []))
        loaded, missing = await load_all(self.blobs, items)
        if missing:
            timeline = await DeletionTimeline.load(conn, {i.document_id for i in missing})
            for i in missing:
                if not timeline.deleted_after(i.document_id, i.event.stream_version):
                    raise BlobNotFound(
                        f"vectors blob {i.event.data['vectors']['sha256']} of document {i.document_id} "
                        f"(event {i.event.event_id}) is missing although the document was never deleted; "
                        "restore the blob store (replay cannot make up vectors)"
                    )
        shaped: list[Embedded] = []
        problems: list[tuple[Embedded, str]] = []
        for i in loaded:
            problem = check_shape(i)
            if problem:
                problems.append((i, problem))
            else:
                shaped.append(i)
        dims = await self._register_models(conn, shaped)
        good: list[Embedded] = []
        for i in shaped:
            assert i.matrix is not None
            if i.model not in dims:
                problems.append((i, f"{i.matrix.shape[1]} dimensions: pgvector's HNSW indexes hold at most "
                                    f"{MAX_INDEXED_DIMENSIONS}, so {i.model} cannot be searched; embed with "
                                    f"fewer dimensions (openai:<model>@N)"))  # fmt: skip
            elif i.matrix.shape[1] != dims[i.model]:
                problems.append((i, f"{i.matrix.shape[1]} dimensions, but model {i.model} has {dims[i.model]}"))
            else:
                good.append(i)
        await self._record_problems(conn, problems)
        if good:
            keys = ([i.document_id for i in good], [i.model for i in good])
            await conn.execute(query("projections", "vectors_delete_pairs"), *keys)
            await conn.execute(query("projections", "vector_sets_delete_pairs"), *keys)
        bodies = [vector_rows(i) for i in good if i.rows and i.rows.ordinals]
        if bodies:
            await conn.copy_to_table("vectors", source=copy.stream(bodies), format="binary",
                                     columns=["chunk_id", "model", "document_id", "embedding"])  # fmt: skip
        if good:
            await conn.execute(
                query("projections", "vector_sets_insert"),
                [i.document_id for i in good],
                [i.model for i in good],
                [i.chunk_set_id for i in good],
                [dims[i.model] for i in good],
                [len(i.rows.ordinals) if i.rows else 0 for i in good],
                [str(i.event.data["vectors"]["sha256"]) for i in good],
                [i.event.position for i in good],
            )

    async def _record_problems(self, conn: Conn, problems: list[tuple[Embedded, str]]) -> None:
        """Loudly: an error in the log and a row `chronos check` reports; the old vectors stay."""
        for i, problem in problems:
            extra = {"action": "project_vectors", "document_id": i.document_id, "event_id": str(i.event.event_id)}
            logger.error("vectors of document %s not projected (its earlier vectors stay): %s",
                         i.document_id, problem, extra=extra)  # fmt: skip
        if problems:
            await conn.execute(
                query("projections", "vector_problems_insert"),
                [i.event.event_id for i, _ in problems],
                [i.event.position for i, _ in problems],
                [i.document_id for i, _ in problems],
                [i.model for i, _ in problems],
                [as_uuid(i.chunk_set_id) for i, _ in problems],
                [p for _, p in problems],
            )

    async def _register_models(self, conn: Conn, items: list[Embedded]) -> dict[str, int]:
        """Dimensions of every model in ``items``; a model seen for the first time is recorded and
        (unless deferred) gets its HNSW index now, before its first vectors arrive."""
        wanted = {i.model: (int(i.event.data["dimensions"]), i.event.position) for i in items}
        if not wanted:
            return {}
        known = {
            r["model"]: r["dimensions"]
            for r in await conn.fetch(query("projections", "embedding_models_get"), list(wanted))
        }
        for model, (dims, position) in wanted.items():
            if model in known or dims > MAX_INDEXED_DIMENSIONS:
                continue  # too large to index: the caller records each such set as a problem
            index = (
                ""
                if self.defer_indexes
                else await conn.fetchval(query("projections", "ensure_vector_index"), model, dims)
            )
            await conn.execute(query("projections", "embedding_models_insert"), model, dims, index or "", position)
            known[model] = dims
            logger.info("new embedding model %s (%d dimensions)", model, dims,
                        extra={"action": "new_model", "model": model, "index": index})  # fmt: skip
        return known

    async def finish_bulk_load(self, conn: Conn) -> None:
        await conn.execute(query("projections", "bulk_index_settings"))
        for r in await conn.fetch(query("projections", "embedding_models_all")):
            index = await conn.fetchval(query("projections", "ensure_vector_index"), r["model"], r["dimensions"])
            await conn.execute(query("projections", "embedding_models_set_index"), r["model"], index)
