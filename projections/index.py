"""The ``index`` projection: everything search reads, switched atomically per document and model.

Which chunk set serves a (document, model) changes only when a ``ChunksEmbedded`` of a set at least
as new as the serving one (newer = chunked later in the document's stream) can be applied: its
vectors replace the serving ones and its chunk rows are in ``chunk_rows`` in the same transaction.
A new chunk set or revision therefore never leaves a document unsearchable while it is embedded,
and a reader never sees two sets of a document. Vectors that stop serving move to
``vectors_history`` with the position range in which they served (search as of a past moment);
``DocumentDeleted`` removes everything of the document, history included.

A ``ChunksEmbedded`` that cannot be applied (a vectors blob of the wrong shape, NaN, a dimension the
model does not have, more dimensions than an HNSW index holds) keeps the serving vectors and is
recorded in ``vector_problems`` (``chronos check`` reports it). Batch boundaries do not matter:
switches within one batch are chained exactly as they would be one batch at a time, so replay
rebuilds the same tables, history included.

Replay makes no model call: vectors come from the float32 blobs named in ``ChunksEmbedded`` and chunk
texts from ``DocumentChunked`` (inline, or the content blob it names). A blob may be missing only
when the document was deleted later (and its blobs collected); then the event is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import numpy as np

from app.catalogue import events as ev
from app.catalogue.codec import decode, decode_payload
from app.catalogue.collections import DEFAULT, apply_metadata
from app.catalogue.content import load_content
from app.catalogue.ids import chunk_id_for, stream_for
from events.blobs import BlobStore
from events.errors import BlobNotFound
from events.sqlfiles import query
from events.types import RecordedEvent
from projections import copy
from projections.base import Conn, Projector, as_uuid, document_id_of, in_own_stream, unique_ids
from projections.index_memory import build_memory_mb
from projections.lineage import DeletionTimeline

logger = logging.getLogger(__name__)
HANDLED = frozenset({
    ev.DocumentUploaded.TYPE, ev.DocumentChunked.TYPE, ev.ChunksEmbedded.TYPE, ev.DocumentDeleted.TYPE,
    ev.DocumentMetadataUpdated.TYPE,
})  # fmt: skip
BLOB_READS = 8  # concurrent blob reads per batch
MAX_INDEXED_DIMENSIONS = 4000  # pgvector HNSW: vector up to 2000, halfvec up to 4000 (sql/040_halfvec_vector_index.sql)
CHUNK_COLUMNS = (
    "chunk_id", "document_id", "chunk_set_id", "ordinal", "text", "text_sha256", "pages", "heading_path",
    "char_start", "char_end", "token_count", "serving", "served_from", "title", "context", "embed_sha256",
    "collection", "metadata",
)  # fmt: skip
VECTOR_COLUMNS = ["chunk_id", "model", "document_id", "embedding", "valid_from"]
HISTORY_COLUMNS = ["chunk_id", "model", "document_id", "embedding", "valid_from", "valid_to"]


@dataclass
class Switch:
    """One applicable ChunksEmbedded: from ``position`` on, ``result``'s set serves (document, model)."""

    recorded: RecordedEvent
    document_id: str
    result: ev.ChunksEmbedded
    matrix: np.ndarray | None = None
    problem: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.document_id, self.result.model)

    @property
    def position(self) -> int:
        return self.recorded.position


@dataclass
class Batch:
    """What one batch changes, gathered in log order before anything is written."""

    docs: dict[str, dict[str, Any]]
    serving: dict[tuple[str, str], str]  # (document, model) -> chunk set, as the batch goes
    order: dict[str, int]  # chunk set -> position of its DocumentChunked (newer = larger)
    new_sets: dict[str, tuple[ev.DocumentChunked, RecordedEvent]] = field(default_factory=dict)
    switches: dict[tuple[str, str], list[Switch]] = field(default_factory=dict)
    purged: set[str] = field(default_factory=set)
    dropped: list[Switch] = field(default_factory=list)  # switches a later deletion in this batch undid
    touched: set[str] = field(default_factory=set)
    relabelled: set[str] = field(default_factory=set)  # documents whose metadata changed (chunk rows rewritten)


class IndexProjector(Projector):
    name = "index"
    tables = (
        "index_documents", "chunk_sets", "chunk_rows", "vector_sets", "vectors", "vectors_history",
        "embedding_models", "vector_problems",
    )  # fmt: skip

    def __init__(
        self, blobs: BlobStore, *, defer_indexes: bool = False, build_memory_cap_mb: int | None = None
    ) -> None:
        self.blobs = blobs
        self.build_memory_cap_mb = build_memory_cap_mb  # CHRONOS_INDEX_BUILD_MEMORY_MB (None: half the RAM)
        self.defer_indexes = defer_indexes  # replay: build HNSW indexes once, after the bulk load

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in HANDLED]
        ids = unique_ids(relevant)
        if not ids:
            return
        batch = await self._load(conn, ids)
        for recorded in relevant:
            doc = document_id_of(recorded)
            if doc is None or not in_own_stream(recorded, doc):
                continue
            state = batch.docs.get(doc)
            if state is not None and recorded.stream_version <= state["stream_version"]:
                continue  # applied already
            state = dict(state or {"document_id": doc, "deleted": False, "collection": DEFAULT, "metadata": {}})
            state.update(stream_version=recorded.stream_version, position=recorded.position)
            batch.docs[doc] = state
            batch.touched.add(doc)
            self._gather(batch, state, doc, recorded)
        await self._write(conn, batch)

    async def _load(self, conn: Conn, ids: list[str]) -> Batch:
        docs = {str(r["document_id"]): dict(r) for r in await conn.fetch(query("index", "documents_get"), ids)}
        serving = {
            (str(r["document_id"]), r["model"]): str(r["chunk_set_id"])
            for r in await conn.fetch(query("index", "vector_sets_get"), ids)
        }
        rows = await conn.fetch(query("index", "set_order"), ids)
        order = {str(r["chunk_set_id"]): r["chunked_position"] for r in rows}
        return Batch(docs, serving, order)

    def _gather(self, batch: Batch, state: dict[str, Any], doc: str, recorded: RecordedEvent) -> None:
        event = decode(recorded)
        if isinstance(event, ev.DocumentUploaded):
            before = {} if state["deleted"] else state["metadata"]
            state.update(deleted=False, collection=event.collection,
                         metadata=apply_metadata(before, event.metadata, "merge"))  # fmt: skip
            batch.relabelled.add(doc)
        elif state["deleted"]:
            return
        elif isinstance(event, ev.DocumentMetadataUpdated):
            state["metadata"] = apply_metadata(state["metadata"], event.metadata, event.mode)
            batch.relabelled.add(doc)
        elif isinstance(event, ev.DocumentChunked):
            batch.new_sets[event.chunk_set_id] = (event, recorded)
            batch.order[event.chunk_set_id] = recorded.position
        elif isinstance(event, ev.ChunksEmbedded):
            current = batch.serving.get((doc, event.model))
            newest = batch.order.get(event.chunk_set_id)
            if newest is None:
                logger.error("ChunksEmbedded for an unknown chunk set %s of document %s", event.chunk_set_id, doc)
                batch.switches.setdefault((doc, event.model), []).append(
                    Switch(recorded, doc, event, problem=f"no DocumentChunked for chunk set {event.chunk_set_id}")
                )
            elif current is None or newest >= batch.order.get(current, -1):
                batch.switches.setdefault((doc, event.model), []).append(Switch(recorded, doc, event))
                batch.serving[(doc, event.model)] = event.chunk_set_id
        elif isinstance(event, ev.DocumentDeleted):
            state["deleted"] = True
            batch.purged.add(doc)
            batch.new_sets = {k: v for k, v in batch.new_sets.items() if v[0].document_id != doc}
            batch.dropped += [
                s for k, chain in batch.switches.items() if k[0] == doc for s in chain if s.problem is None
            ]
            batch.switches = {k: v for k, v in batch.switches.items() if k[0] != doc}
            batch.serving = {k: v for k, v in batch.serving.items() if k[0] != doc}

    # --- writing ---------------------------------------------------------------------------

    async def _write(self, conn: Conn, batch: Batch) -> None:
        if batch.purged:
            await conn.execute(query("index", "purge_documents"), list(batch.purged))
        if batch.new_sets:
            await conn.execute(
                query("index", "chunk_sets_insert"),
                [s.revision or 1 for s, _ in batch.new_sets.values()],
                [s.chunk_set_id for s, _ in batch.new_sets.values()],
                [s.document_id for s, _ in batch.new_sets.values()],
                [s.conversion_id for s, _ in batch.new_sets.values()],
                [msgspec.json.encode(s.parameters).decode() for s, _ in batch.new_sets.values()],
                [len(s.chunks) for s, _ in batch.new_sets.values()],
                [r.position for _, r in batch.new_sets.values()],
            )
        if batch.switches or batch.dropped:
            await self._switch(conn, batch)
        docs = [batch.docs[d] for d in batch.touched]
        await conn.execute(
            query("index", "documents_upsert"),
            [d["document_id"] for d in docs],
            [d["deleted"] for d in docs],
            [d["stream_version"] for d in docs],
            [d["position"] for d in docs],
            [d["collection"] for d in docs],
            [d["metadata"] for d in docs],
        )
        # Chunk rows carry their document's current collection and metadata (search filters on them):
        # rows written above already do; rows of earlier batches are rewritten here, in this transaction.
        relabel = [batch.docs[d] for d in batch.relabelled if not batch.docs[d]["deleted"]]
        if relabel:
            await conn.execute(
                query("index", "chunk_rows_relabel"),
                [d["document_id"] for d in relabel],
                [d["collection"] for d in relabel],
                [d["metadata"] for d in relabel],
            )

    async def _switch(self, conn: Conn, batch: Batch) -> None:
        items = [s for chain in batch.switches.values() for s in chain if s.problem is None]
        sets = await self._chunk_sets(conn, {s.result.chunk_set_id: s.document_id for s in items}, batch)
        missing = await self._load_vectors(items)
        if missing:
            await self._only_if_deleted_later(conn, missing, "vectors")
        for s in items:
            if s.problem is None and s.matrix is not None:
                s.problem = _shape_problem(s, sets.get(s.result.chunk_set_id))
        valid = [s for s in items if s.problem is None and s.matrix is not None]
        # a model's first appearance is the same live and at replay, where a deleted document's
        # vectors blob is gone (or its deletion falls in the same batch) but its result names the model
        dims = await self._register_models(conn, valid + missing + batch.dropped)
        for s in valid:
            assert s.matrix is not None
            if s.result.model not in dims:
                s.problem = (f"{s.matrix.shape[1]} dimensions: pgvector's HNSW indexes hold at most "
                             f"{MAX_INDEXED_DIMENSIONS}, so {s.result.model} cannot be searched; embed with "
                             "fewer dimensions (openai:<model>@N)")  # fmt: skip
            elif s.matrix.shape[1] != dims[s.result.model]:
                s.problem = f"{s.matrix.shape[1]} dimensions, but model {s.result.model} has {dims[s.result.model]}"
        all_items = [s for chain in batch.switches.values() for s in chain]
        await self._record_problems(conn, [s for s in all_items if s.problem is not None])
        chains = {
            key: [s for s in chain if s.problem is None and s.matrix is not None]
            for key, chain in batch.switches.items()
        }
        chains = {key: chain for key, chain in chains.items() if chain}
        if not chains:
            return
        await self._move_vectors(conn, batch, chains, sets)
        await self._install_chunks(conn, batch, chains, sets)

    async def _move_vectors(
        self, conn: Conn, batch: Batch, chains: dict[tuple[str, str], list[Switch]], sets: dict[str, SetRows]
    ) -> None:
        """Serving vectors of each (document, model) to history, chained switches of this batch to
        history, the last switch's vectors into ``vectors``."""
        keys = list(chains)
        await conn.execute(
            query("index", "vectors_to_history"),
            [k[0] for k in keys],
            [k[1] for k in keys],
            [chains[k][0].position for k in keys],
        )
        history: list[bytes] = []
        current: list[bytes] = []
        for chain in chains.values():
            for i, s in enumerate(chain):
                rows = sets[s.result.chunk_set_id]
                if i + 1 < len(chain):
                    history.append(_vector_rows(s, rows, valid_to=chain[i + 1].position))
                else:
                    current.append(_vector_rows(s, rows))
        if history:
            await conn.copy_to_table("vectors_history", source=copy.stream(history), format="binary",
                                     columns=HISTORY_COLUMNS)  # fmt: skip
        if current:
            await conn.copy_to_table("vectors", source=copy.stream(current), format="binary", columns=VECTOR_COLUMNS)
        last = [chain[-1] for chain in chains.values()]
        await conn.execute(
            query("index", "vector_sets_upsert"),
            [s.document_id for s in last],
            [s.result.model for s in last],
            [s.result.chunk_set_id for s in last],
            [s.result.dimensions for s in last],
            [len(sets[s.result.chunk_set_id].ordinals) for s in last],
            [s.result.vectors.sha256 for s in last],
            [s.position for s in last],
            [sets[s.result.chunk_set_id].event.revision or 1 for s in last],
        )

    async def _install_chunks(
        self, conn: Conn, batch: Batch, chains: dict[tuple[str, str], list[Switch]], sets: dict[str, SetRows]
    ) -> None:
        """Chunk rows of every set that served in this batch (kept for history), then which sets serve."""
        first_served: dict[str, int] = {}
        for chain in chains.values():
            for s in chain:
                sid = s.result.chunk_set_id
                first_served[sid] = min(first_served.get(sid, s.position), s.position)
        present = {
            str(r["chunk_set_id"]) for r in await conn.fetch(query("index", "chunk_rows_present"), list(first_served))
        }
        wanted = [sid for sid in first_served if sid not in present]
        texts = await self._texts(conn, [sets[sid] for sid in wanted])
        records = [
            rec
            for sid in wanted
            for rec in chunk_records(sets[sid], texts[sid], first_served[sid], batch.docs.get(sets[sid].document_id))
        ]
        if records:
            await conn.copy_records_to_table("chunk_rows", records=records, columns=CHUNK_COLUMNS)
        docs = sorted({k[0] for k in chains})
        await conn.execute(query("index", "chunk_rows_set_serving"), docs)

    # --- reading what the switches need ------------------------------------------------------

    async def _chunk_sets(self, conn: Conn, wanted: dict[str, str], batch: Batch) -> dict[str, SetRows]:
        """The DocumentChunked of each wanted set: from the batch, else from the log."""
        found = {sid: SetRows.of(e, r.stream_version) for sid, (e, r) in batch.new_sets.items() if sid in wanted}
        missing = [sid for sid in wanted if sid not in found]
        if missing:
            streams = sorted({stream_for(wanted[sid]) for sid in missing})
            for r in await conn.fetch(query("index", "chunked_events"), streams, missing):
                chunked = decode_payload(ev.DocumentChunked.TYPE, r["schema_version"], r["data"])
                assert isinstance(chunked, ev.DocumentChunked)
                found.setdefault(chunked.chunk_set_id, SetRows.of(chunked, r["stream_version"]))
        return found

    async def _load_vectors(self, items: list[Switch]) -> list[Switch]:
        """Load each switch's vectors; returns the switches whose blob is missing."""
        gate = asyncio.Semaphore(BLOB_READS)
        missing: list[Switch] = []

        async def one(s: Switch) -> None:
            async with gate:
                try:
                    raw = await self.blobs.get_bytes(s.result.vectors.sha256)
                except BlobNotFound:
                    missing.append(s)
                    return
            dims = s.result.dimensions
            if dims <= 0 or len(raw) % (4 * dims):
                s.problem = f"vectors blob of {len(raw)} bytes is not float32 rows of {dims} dimensions"
            else:
                s.matrix = np.frombuffer(raw, dtype="<f4").reshape(-1, dims)

        await asyncio.gather(*(one(s) for s in items))
        return missing

    async def _texts(self, conn: Conn, sets: list[SetRows]) -> dict[str, list[ev.ChunkContent]]:
        """Text and heading path of every chunk of each set (inline in v1 events, else the content blob)."""
        out: dict[str, list[ev.ChunkContent]] = {}
        missing: list[SetRows] = []
        for rows in sets:
            try:
                content = await load_content(self.blobs, rows.event)
            except BlobNotFound:
                missing.append(rows)
                content = [ev.ChunkContent(text="") for _ in rows.event.chunks]
            by_ordinal = {c.ordinal: x for c, x in zip(rows.event.chunks, content, strict=True)}
            out[rows.chunk_set_id] = [by_ordinal[c.ordinal] for c in rows.chunks]
        if missing:
            await self._only_if_deleted_later(conn, missing, "chunk content")
        return out

    async def _only_if_deleted_later(self, conn: Conn, items: Iterable[Switch | SetRows], what: str) -> None:
        items = list(items)
        timeline = await DeletionTimeline.load(conn, {i.document_id for i in items})
        for i in items:
            version = i.recorded.stream_version if isinstance(i, Switch) else i.version
            if not timeline.deleted_after(i.document_id, version):
                sha = i.result.vectors.sha256 if isinstance(i, Switch) else (i.event.content or ev.BlobRef(
                    sha256="?", size=0)).sha256  # fmt: skip
                raise BlobNotFound(
                    f"{what} blob {sha} of document {i.document_id} is missing although the document was never "
                    "deleted; restore the blob store (replay cannot make it up)"
                )

    async def _record_problems(self, conn: Conn, problems: list[Switch]) -> None:
        """Loudly: an error in the log and a row `chronos check` reports; the serving vectors stay."""
        for s in problems:
            extra = {"action": "project_vectors", "document_id": s.document_id, "event_id": str(s.recorded.event_id)}
            logger.error("vectors of document %s not projected (its serving vectors stay): %s",
                         s.document_id, s.problem, extra=extra)  # fmt: skip
        if problems:
            await conn.execute(
                query("index", "vector_problems_insert"),
                [s.recorded.event_id for s in problems],
                [s.position for s in problems],
                [s.document_id for s in problems],
                [s.result.model for s in problems],
                [as_uuid(s.result.chunk_set_id) for s in problems],
                [s.problem for s in problems],
            )

    async def _register_models(self, conn: Conn, items: list[Switch]) -> dict[str, int]:
        """Dimensions of every model in ``items``; a model seen for the first time is recorded and
        (unless deferred) gets its HNSW index now, before its first vectors arrive."""
        wanted: dict[str, tuple[int, int]] = {}
        for s in sorted(items, key=lambda s: s.position):  # a model's first appearance, whatever the batch
            wanted.setdefault(s.result.model, (s.result.dimensions, s.position))
        if not wanted:
            return {}
        known = {
            r["model"]: r["dimensions"]
            for r in await conn.fetch(query("projections", "embedding_models_get"), list(wanted))
        }
        for model, (dims, position) in wanted.items():
            if model in known or dims > MAX_INDEXED_DIMENSIONS:
                continue  # too large to index: the caller records each such switch as a problem
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
        """Build each model's HNSW index CONCURRENTLY (``conn`` outside a transaction, its session
        ``search_path`` on the shadow tables). A plain CREATE INDEX would hold a transaction id for
        the whole build, and with it the log's safe horizon: every live subscriber on the server
        would wait at the events committed meanwhile until the build ended (sql/097)."""
        hnsw = await conn.fetchrow(query("projections", "hnsw_parameters"))
        assert hnsw is not None
        before = await conn.fetchrow(query("projections", "bulk_index_settings_current"))
        assert before is not None
        cap = self.build_memory_cap_mb
        try:
            for r in await conn.fetch(query("projections", "embedding_models_all")):
                model, dims = r["model"], r["dimensions"]
                count = await conn.fetchval(query("projections", "vectors_per_model"), model)
                mb, need = build_memory_mb(count, dims, hnsw["m"], cap)
                if need > mb:
                    logger.warning(
                        "the HNSW graph of %d %s vectors needs ~%d MB of maintenance_work_mem; building with %d MB "
                        "(CHRONOS_INDEX_BUILD_MEMORY_MB), which is many times slower once the graph spills",
                        count, model, need, mb, extra={"action": "index_build_memory", "model": model},
                    )  # fmt: skip
                settings = await conn.fetchrow(query("projections", "bulk_index_settings"), mb)
                assert settings is not None
                row = await conn.fetchrow(query("projections", "vector_index_statement"), model, dims, True)
                assert row is not None
                index, statement = row["index_name"], row["statement"]
                logger.info(
                    "building the HNSW index of %d %s vectors concurrently with %d MB of maintenance_work_mem",
                    count, model, settings["mb"],
                    extra={"action": "index_build", "model": model, "vectors": count, "memory_mb": settings["mb"]},
                )  # fmt: skip
                try:
                    await conn.execute(statement)
                except BaseException:
                    # A failed concurrent build leaves an invalid index behind; the shadow table goes
                    # with the failed replay, but the next run's "IF NOT EXISTS" must not keep it.
                    with contextlib.suppress(*_CONNECTION_ERRORS):
                        drop = await conn.fetchval(query("projections", "drop_vector_index_statement"), index)
                        await conn.execute(drop)
                    raise
                await conn.execute(query("projections", "embedding_models_set_index"), model, index)
        finally:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await conn.fetchrow(
                    query("projections", "bulk_index_settings_reset"),
                    before["maintenance_work_mem"], before["max_parallel_maintenance_workers"],
                )  # fmt: skip


_CONNECTION_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass
class SetRows:
    """A chunk set's chunks in ordinal order (the vectors blob's row order)."""

    event: ev.DocumentChunked
    chunks: list[ev.Chunk]
    version: int = 0

    @classmethod
    def of(cls, event: ev.DocumentChunked, version: int) -> SetRows:
        return cls(event, sorted(event.chunks, key=lambda c: c.ordinal), version)

    @property
    def chunk_set_id(self) -> str:
        return self.event.chunk_set_id

    @property
    def document_id(self) -> str:
        return self.event.document_id

    @property
    def ordinals(self) -> list[int]:
        return [c.ordinal for c in self.chunks]


def _shape_problem(s: Switch, rows: SetRows | None) -> str | None:
    assert s.matrix is not None
    if rows is None:
        return f"no DocumentChunked for chunk set {s.result.chunk_set_id}"
    if s.matrix.shape[0] != len(rows.chunks):
        return f"vectors blob has {s.matrix.shape[0]} rows for a chunk set of {len(rows.chunks)} chunks"
    if not np.isfinite(s.matrix).all():
        return "vectors blob holds NaN or infinite values"
    return None


def _vector_rows(s: Switch, rows: SetRows, valid_to: int | None = None) -> bytes:
    assert s.matrix is not None
    n = len(rows.chunks)
    ids = [chunk_id_for(rows.chunk_set_id, o) for o in rows.ordinals]
    doc = as_uuid(s.document_id)
    assert doc is not None
    fields: list[tuple[str, object]] = [
        ("uuid", ids), ("text", s.result.model), ("uuid", [doc] * n), ("vector", s.matrix), ("int8", s.position),
    ]  # fmt: skip
    if valid_to is not None:
        fields.append(("int8", valid_to))
    return copy.encode_rows(n, fields)


def chunk_records(
    rows: SetRows, texts: list[ev.ChunkContent], served_from: int, document: dict[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """``chunk_rows`` records of a set (``document``: its index_documents state, for collection and metadata)."""
    doc = as_uuid(rows.document_id)
    set_id = as_uuid(rows.chunk_set_id)
    collection = document["collection"] if document else DEFAULT
    metadata = document["metadata"] if document else {}
    return [
        (chunk_id_for(rows.chunk_set_id, c.ordinal), doc, set_id, c.ordinal, x.text, c.text_sha256, list(c.pages),
         list(x.heading_path), c.char_start, c.char_end, c.token_count, False, served_from, x.title, x.context,
         c.embed_sha256, collection, metadata)
        for c, x in zip(rows.chunks, texts, strict=True)
    ]  # fmt: skip
