"""The ``documents`` projection: one row per document with its status machine.

Statuses: ``uploaded`` → ``converted`` → ``chunked`` → ``searchable``; a reprocess request moves
a document to ``converting`` / ``chunking`` / ``embedding`` until the stage's result arrives.
Final statuses (public contract): ``searchable``, ``failed`` (a *Failed event with ``final``;
``last_error``/``error_class`` say why) and ``deleted``. A non-final failure only records the
error and counts the attempt. Latest version wins: a stage's newest result is the current one,
except vectors of a chunk set that is no longer current (a re-chunk superseded it), which are
ignored. After ``DocumentDeleted`` only a new ``DocumentUploaded`` (and costs) change the row.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app import domain
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector, document_id_of, in_own_stream, unique_ids

State = dict[str, Any]
_COST_SCALE = Decimal("1e-8")  # documents.total_cost_usd is numeric(14, 8)

_REQUESTED = {
    domain.CONVERSION_REQUESTED: ("converting", "convert"),
    domain.CHUNKING_REQUESTED: ("chunking", "chunk"),
    domain.EMBEDDING_REQUESTED: ("embedding", "embed"),
}
_FAILED = {domain.CONVERSION_FAILED: "convert", domain.CHUNKING_FAILED: "chunk", domain.EMBEDDING_FAILED: "embed"}
HANDLED = frozenset(
    {
        domain.DOCUMENT_UPLOADED,
        domain.DOCUMENT_CONVERTED,
        domain.DOCUMENT_CHUNKED,
        domain.CHUNKS_EMBEDDED,
        domain.COST_INCURRED,
        domain.DOCUMENT_DELETED,
        domain.CHUNKING_UNCHANGED,
        *_REQUESTED,
        *_FAILED,
    }
)


def _cleared(s: State) -> None:
    """A new request or a success: the current stage starts over."""
    s["attempts"] = 0
    s["failed_stage"] = None
    s["failed_at"] = None


def fold(state: State | None, e: RecordedEvent, document_id: str) -> State | None:
    """The row after ``e`` (pure; ``None`` while no upload is known)."""
    d = e.data
    if e.type == domain.DOCUMENT_UPLOADED:
        s: State = dict(state) if state else {"document_id": document_id, "total_cost_usd": Decimal(0)}
        s.update(
            filename=str(d.get("filename") or ""),
            media_type=d.get("media_type"),
            size=d.get("size"),
            sha256=d.get("sha256"),
            source=d.get("source"),
            source_ref=d.get("source_ref"),
            status="uploaded",
            current_stage="convert",
            uploaded_at=e.recorded_at,
            deleted_at=None,
            last_error=None,
            error_class=None,
        )
        _cleared(s)
        return _touch(s, e)
    if state is None:
        return None
    s = dict(state)
    if e.type == domain.COST_INCURRED:
        # Rounded to the column's scale at every step, as a stored row is: otherwise the total would
        # depend on how events were batched (live in small batches vs one replay batch).
        total = Decimal(s["total_cost_usd"]) + Decimal(str(d.get("amount_usd") or 0))
        s["total_cost_usd"] = total.quantize(_COST_SCALE, rounding=ROUND_HALF_UP)
        return _touch(s, e)
    if s["status"] == "deleted":
        return _touch(s, e)
    if e.type in _REQUESTED:
        s["status"], s["current_stage"] = _REQUESTED[e.type]
        s["requested_at"] = e.recorded_at
        _cleared(s)
    elif e.type == domain.DOCUMENT_CONVERTED:
        s.update(
            status="converted",
            current_stage="chunk",
            backend=d.get("backend"),
            pipeline=d.get("pipeline"),
            docling_version=d.get("docling_version"),
            page_count=d.get("page_count"),
            conversion_id=d.get("conversion_id"),
            converted_at=e.recorded_at,
        )
        _cleared(s)
    elif e.type == domain.DOCUMENT_CHUNKED:
        s.update(
            status="chunked",
            current_stage="embed",
            chunk_set_id=d.get("chunk_set_id"),
            chunk_count=len(d.get("chunks") or ()),
            chunk_size=(d.get("parameters") or {}).get("chunk_size"),
            chunked_at=e.recorded_at,
        )
        _cleared(s)
    elif e.type == domain.CHUNKING_UNCHANGED:
        # The request is settled by the current chunk set: searchable again when it has vectors.
        embedded = s.get("embedded_at") is not None and s.get("chunked_at") is not None
        embedded = embedded and s["embedded_at"] >= s["chunked_at"]
        s.update(status="searchable" if embedded else "chunked", current_stage=None if embedded else "embed")
        _cleared(s)
    elif e.type == domain.CHUNKS_EMBEDDED:
        if str(d.get("chunk_set_id")) != str(s.get("chunk_set_id")):
            return _touch(s, e)  # vectors of a superseded chunk set
        s.update(status="searchable", current_stage=None, embedding_model=d.get("model"), embedded_at=e.recorded_at)
        _cleared(s)
    elif e.type in _FAILED:
        s["attempts"] = int(s.get("attempts") or 0) + 1
        s["last_error"] = d.get("message")
        s["error_class"] = d.get("error_class")
        if d.get("final"):
            s.update(status="failed", current_stage=None, failed_stage=_FAILED[e.type], failed_at=e.recorded_at)
    elif e.type == domain.DOCUMENT_DELETED:
        s.update(status="deleted", current_stage=None, chunk_count=0, deleted_at=e.recorded_at)
    return _touch(s, e)


def _touch(s: State, e: RecordedEvent) -> State:
    s["updated_at"] = e.recorded_at
    s["last_position"] = max(int(s.get("last_position") or 0), e.position)
    return s


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


class DocumentsProjector(Projector):
    name = "documents"
    tables = ("documents",)

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in HANDLED]
        ids = unique_ids(relevant)
        if not ids:
            return
        rows = await conn.fetch(query("projections", "documents_get"), ids)
        states: dict[str, State | None] = {str(r["document_id"]): dict(r) for r in rows}
        changed: set[str] = set()
        for e in relevant:
            doc = document_id_of(e)
            if doc is None or doc not in ids:
                continue
            state = states.get(doc)
            own = in_own_stream(e, doc)
            if own and state is not None and e.stream_version <= int(state.get("stream_version") or 0):
                continue  # applied already
            new = fold(state, e, doc)
            if new is None:
                continue
            if own:
                new["stream_version"] = e.stream_version
            new.setdefault("stream_version", 0)
            states[doc] = new
            changed.add(doc)
        if not changed:
            return
        payload = [{k: _jsonable(v) for k, v in s.items()} for d, s in states.items() if d in changed and s]
        await conn.execute(query("projections", "documents_delete"), list(changed))
        await conn.execute(query("projections", "documents_insert"), payload)
