"""Where a document stands: the one reducer every reader uses.

``evolve(state, event, recorded)`` is pure. The ``documents`` projection persists its result, the
stages decide from it (deleted? which conversion and chunk set are current? which settings are
sticky?), ``chronos ingest --wait`` waits on it and the API shows it. There is no other rule.

Statuses: ``uploaded`` → ``converted`` → ``chunked`` → ``searchable``; a request moves a document to
``converting`` / ``chunking`` / ``embedding`` until the stage's result (or final failure) arrives. An
embedding request an OpenAI Batch API job owns (``batch_id``) is no different: the document is
``embedding`` while the batch runs (up to 24 hours), and the poller records its result or, when the
batch ended without all of the document's texts, a final ``BatchIncomplete`` failure.
Final (public contract): ``searchable``, ``failed`` (a final failure event of the latest work; its
``last_error`` and ``error_class`` say why) and ``deleted``. A non-final failure records the error and
counts the attempt. ``searchable`` and ``serving`` are not the same thing: a document whose re-embedding
failed for good is ``failed`` (that is where its latest work stands) while search still answers from
the vectors it already had (``serving_chunk_set_id``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

import orjson

from app.catalogue import events as ev
from app.catalogue.collections import apply_metadata
from events.types import RecordedEvent

COST_SCALE = Decimal("1e-8")  # documents.total_cost_usd is numeric(14, 8)


class Status(StrEnum):
    UPLOADED = "uploaded"
    CONVERTING = "converting"
    CONVERTED = "converted"
    CHUNKING = "chunking"
    CHUNKED = "chunked"
    EMBEDDING = "embedding"
    SEARCHABLE = "searchable"
    FAILED = "failed"
    DELETED = "deleted"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({Status.SEARCHABLE, Status.FAILED, Status.DELETED})
_REQUESTED: dict[type[ev.Event], tuple[Status, ev.Stage]] = {
    ev.ConversionRequested: (Status.CONVERTING, "convert"),
    ev.ChunkingRequested: (Status.CHUNKING, "chunk"),
    ev.EmbeddingRequested: (Status.EMBEDDING, "embed"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentState:
    """One document. The first block are the ``documents`` table's columns; ``sticky`` settings and
    ``embedded`` pairs are persisted with them (column ``state``) so folding can go on from a row."""

    document_id: str
    filename: str = ""
    media_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    source: str | None = None
    source_ref: str | None = None
    status: Status = Status.UPLOADED
    current_stage: str | None = "convert"
    page_count: int | None = None
    chunk_count: int | None = None
    backend: str | None = None
    pipeline: str | None = None
    docling_version: str | None = None
    conversion_id: str | None = None
    chunk_set_id: str | None = None
    chunk_size: int | None = None
    embedding_model: str | None = None
    attempts: int = 0
    last_error: str | None = None
    error_class: str | None = None
    failed_stage: str | None = None
    total_cost_usd: Decimal = Decimal(0)
    uploaded_at: dt.datetime | None = None
    requested_at: dt.datetime | None = None
    converted_at: dt.datetime | None = None
    chunked_at: dt.datetime | None = None
    embedded_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    stream_version: int = 0
    last_position: int = 0
    document_key: str | None = None  # the logical document's key (None: identified by its content)
    revision: int = 1  # the latest revision; the status is about it
    serving_revision: int | None = None  # the revision search answers from
    collection: str = "default"  # docs/collections.md (fixed for the document: it is part of its id)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # current metadata (jsonb)
    # -- persisted in the ``state`` column --
    chunk_settings: tuple[int | None, int | None] = (None, None)  # sticky (chunk_size, overlap) of a request
    context_template: str | None = None  # sticky context template of a request (None: the default)
    model: str | None = None  # sticky model of the latest embedding request
    embedded: frozenset[tuple[str, str]] = frozenset()  # (chunk_set_id, model) pairs with vectors
    serving_chunk_set_id: str | None = None  # the newest chunk set search has vectors of
    halted: str | None = None  # the stage whose final failure stops the work after it, until retried
    chunk_set_revision: int | None = None  # the revision the current chunk set was made for

    @property
    def deleted(self) -> bool:
        return self.status is Status.DELETED

    @property
    def final(self) -> bool:
        return self.status.final

    @property
    def failure(self) -> str | None:
        """``ErrorClass: message`` of a failed document."""
        if self.status is not Status.FAILED:
            return None
        return f"{self.error_class}: {self.last_error}" if self.error_class else self.last_error

    def blocked_before(self, stage: str) -> bool:
        """Has an earlier stage failed for good, so that ``stage`` has no input and will not get one?"""
        return self.halted is not None and _ORDER[self.halted] < _ORDER[stage]

    def is_embedded(self, chunk_set_id: str | None, model: str | None = None) -> bool:
        return any(s == chunk_set_id and (model is None or m == model) for s, m in self.embedded)

    # --- persistence (the documents table) ---

    def extras(self) -> dict[str, Any]:
        return {
            "chunk_settings": list(self.chunk_settings),
            "context_template": self.context_template,
            "model": self.model,
            "embedded": sorted([s, m] for s, m in self.embedded),
            "serving_chunk_set_id": self.serving_chunk_set_id,
            "halted": self.halted,
            "chunk_set_revision": self.chunk_set_revision,
        }

    def row(self) -> dict[str, Any]:
        """Column values of the documents row (``state`` holds the extras)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _EXTRA}
        out["status"] = str(self.status)
        out["state"] = self.extras()
        return out

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DocumentState:
        extras = row.get("state") or {}
        values: dict[str, Any] = {
            f.name: row.get(f.name) for f in dataclasses.fields(cls) if f.name not in _EXTRA and f.name in row
        }
        values["document_id"] = str(row["document_id"])
        for key in ("conversion_id", "chunk_set_id"):
            if values.get(key) is not None:
                values[key] = str(values[key])
        values["status"] = Status(row["status"])
        values["total_cost_usd"] = Decimal(str(row.get("total_cost_usd") or 0))
        values["attempts"] = int(row.get("attempts") or 0)
        values["collection"] = row.get("collection") or "default"
        meta = row.get("metadata")
        values["metadata"] = dict(orjson.loads(meta) if isinstance(meta, str | bytes) else meta or {})
        settings = extras.get("chunk_settings") or [None, None]
        return cls(
            **values,
            chunk_settings=(settings[0], settings[1]),
            context_template=extras.get("context_template"),
            model=extras.get("model"),
            embedded=frozenset((str(s), str(m)) for s, m in extras.get("embedded") or ()),
            serving_chunk_set_id=extras.get("serving_chunk_set_id"),
            halted=extras.get("halted"),
            chunk_set_revision=extras.get("chunk_set_revision"),
        )


_EXTRA = frozenset(
    {"chunk_settings", "context_template", "model", "embedded", "serving_chunk_set_id", "halted", "chunk_set_revision"}
)
EXTRA_FIELDS = _EXTRA  # kept in documents.state (jsonb), not in columns
_ORDER = {"convert": 0, "chunk": 1, "embed": 2}


def _touch(s: DocumentState, recorded: RecordedEvent, own: bool, **changes: Any) -> DocumentState:
    changes["updated_at"] = recorded.recorded_at
    changes["last_position"] = max(s.last_position, recorded.position)
    if own:
        changes["stream_version"] = recorded.stream_version
    return dataclasses.replace(s, **changes)


_CLEARED = {"attempts": 0, "failed_stage": None, "failed_at": None}
_NEW_REVISION: dict[str, Any] = {
    "page_count": None, "chunk_count": None, "backend": None, "pipeline": None, "docling_version": None,
    "conversion_id": None, "chunk_set_id": None, "chunk_size": None, "requested_at": None, "converted_at": None,
    "chunked_at": None, "embedded_at": None, "failed_at": None, "halted": None, "chunk_set_revision": None,
}  # fmt: skip


def evolve(state: DocumentState | None, event: ev.Event, recorded: RecordedEvent) -> DocumentState | None:
    """The state after ``event`` (stored as ``recorded``); ``None`` while no upload is known."""
    own = recorded.stream_id == f"document-{getattr(event, 'document_id', '')}"
    if isinstance(event, ev.DocumentUploaded):
        base = state or DocumentState(document_id=event.document_id)
        if base.deleted:  # content again after a deletion: a fresh start in the same stream
            base = DocumentState(document_id=event.document_id, total_cost_usd=base.total_cost_usd)
        elif state is not None:
            # A new revision: its pipeline starts over; search keeps answering from the serving one.
            base = dataclasses.replace(base, **_NEW_REVISION)
        metadata = apply_metadata(base.metadata, event.metadata, "merge")
        return _touch(
            base, recorded, own, **_CLEARED,
            filename=event.filename, media_type=event.media_type, size=event.size, sha256=event.sha256,
            source=event.source, source_ref=event.source_ref, status=Status.UPLOADED, current_stage="convert",
            uploaded_at=recorded.recorded_at, deleted_at=None, last_error=None, error_class=None,
            document_key=event.key, revision=event.revision, collection=event.collection, metadata=metadata,
        )  # fmt: skip
    if state is None:
        return None
    if isinstance(event, ev.CostIncurred):
        # Rounded to the column's scale at every step, as a stored row is: otherwise the total would
        # depend on how events were batched (live in small batches vs one replay batch).
        total = (state.total_cost_usd + Decimal(str(event.amount_usd))).quantize(COST_SCALE, ROUND_HALF_UP)
        return _touch(state, recorded, own, total_cost_usd=total)
    if state.deleted:
        return _touch(state, recorded, own)
    made_for = getattr(event, "revision", None)
    if made_for is not None and made_for < state.revision:
        # Work for a revision that a newer one replaced: it no longer says where the document stands.
        if isinstance(event, ev.ChunksEmbedded):
            return _touch(state, recorded, own, embedded=state.embedded | {(event.chunk_set_id, event.model)})
        return _touch(state, recorded, own)
    return _touch(state, recorded, own, **_changes(state, event, recorded))


def _changes(s: DocumentState, event: ev.Event, recorded: RecordedEvent) -> dict[str, Any]:
    at = recorded.recorded_at
    match event:
        case ev.ConversionRequested() | ev.ChunkingRequested() | ev.EmbeddingRequested():
            status, stage = _REQUESTED[type(event)]
            out: dict[str, Any] = {**_CLEARED, "status": status, "current_stage": stage, "requested_at": at}
            if s.halted is not None and _ORDER[s.halted] >= _ORDER[stage]:
                out["halted"] = None  # that stage (or an earlier one) is tried again
            if isinstance(event, ev.ChunkingRequested):
                out["chunk_settings"] = (event.chunk_size, event.chunk_overlap)
                if event.context_template is not None:
                    out["context_template"] = event.context_template
            if isinstance(event, ev.EmbeddingRequested):
                out["model"] = event.model
            return out
        case ev.DocumentConverted():
            return {
                **_CLEARED, "status": Status.CONVERTED, "current_stage": "chunk", "backend": event.backend,
                "pipeline": event.pipeline, "docling_version": event.docling_version, "page_count": event.page_count,
                "conversion_id": event.conversion_id, "converted_at": at, "halted": None,
            }  # fmt: skip
        case ev.DocumentChunked():
            return {
                **_CLEARED, "status": Status.CHUNKED, "current_stage": "embed", "chunk_set_id": event.chunk_set_id,
                "chunk_count": len(event.chunks), "chunk_size": event.parameters.chunk_size, "chunked_at": at,
                "halted": None, "chunk_set_revision": event.revision or s.revision,
            }  # fmt: skip
        case ev.ChunkingUnchanged():
            # The request is settled by the current chunk set: searchable again when it has vectors.
            done = s.is_embedded(event.chunk_set_id)
            return {**_CLEARED, "status": Status.SEARCHABLE if done else Status.CHUNKED,
                    "current_stage": None if done else "embed", "halted": None}  # fmt: skip
        case ev.ChunksEmbedded():
            embedded = s.embedded | {(event.chunk_set_id, event.model)}
            if event.chunk_set_id != s.chunk_set_id:
                return {"embedded": embedded}  # vectors of a superseded chunk set
            return {
                **_CLEARED, "status": Status.SEARCHABLE, "current_stage": None, "embedding_model": event.model,
                "embedded_at": at, "embedded": embedded, "serving_chunk_set_id": event.chunk_set_id,
                "serving_revision": s.chunk_set_revision or s.revision, "last_error": None, "error_class": None,
                "halted": None,
            }  # fmt: skip
        case ev.DocumentMetadataUpdated():
            return {"metadata": apply_metadata(s.metadata, event.metadata, event.mode)}
        case ev.EmbeddingsCached():
            # Paid vectors kept for a retry (the embedding cache takes them in): where the document
            # stands is said by the failure recorded with them.
            return {}
        case ev.StageFailed():
            out = {"attempts": s.attempts + 1, "last_error": event.message, "error_class": event.error_class}
            if event.final:
                out.update(
                    status=Status.FAILED,
                    current_stage=None,
                    failed_stage=event.STAGE,
                    failed_at=at,
                    halted=event.STAGE if s.halted is None or _ORDER[event.STAGE] < _ORDER[s.halted] else s.halted,
                )
            return out
        case ev.DocumentDeleted():
            return {"status": Status.DELETED, "current_stage": None, "chunk_count": 0, "deleted_at": at,
                    "serving_chunk_set_id": None, "serving_revision": None}  # fmt: skip
    return {}


def fold(events: list[RecordedEvent], state: DocumentState | None = None) -> DocumentState | None:
    """The state after a stream's ``events`` (decoded here), starting from ``state``."""
    from app.catalogue.codec import UnknownEvent, decode

    for recorded in events:
        event = decode(recorded)
        if not isinstance(event, UnknownEvent):
            state = evolve(state, event, recorded)
    return state
