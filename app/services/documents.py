"""Reading documents: one document's whole view (state, stage timeline, costs, errors), and watching
a set of documents until they are final (``chronos ingest --wait``). Both read the log, not the
projections, so a caller sees its own upload at once; both use the one reducer
(``app.catalogue.state``), so they agree with the ``documents`` table by construction."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from app.catalogue import events as ev
from app.catalogue.codec import UnknownEvent, decode
from app.catalogue.ids import document_id_from_stream, stream_for
from app.catalogue.state import DocumentState, Status, evolve
from app.errors import Conflict, InvalidRequest, NotFound
from app.pipeline.dispatcher import STAGE_FOR
from events.log import EventLog
from events.sqlfiles import query
from events.store import EventStore
from events.types import RecordedEvent


class DocumentNotFound(NotFound):
    """No such document."""


class DocumentDeleted(Conflict):
    """The document was deleted."""

    code = "deleted"


def parse_document_id(raw: str) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise DocumentNotFound(f"{raw!r} is not a document id (a UUID; see `chronos documents list`)") from None


async def read_document(store: EventLog, document_id: str) -> tuple[DocumentState, list[RecordedEvent]]:
    """The document's state and its stream; DocumentNotFound when the stream holds no upload."""
    doc = parse_document_id(document_id)
    events = await store.read_stream_all(stream_for(doc))
    state = fold_typed(events)
    if state is None:
        raise DocumentNotFound(f"no document {doc} (see `chronos documents list`)")
    return state, events


def fold_typed(events: list[RecordedEvent], state: DocumentState | None = None) -> DocumentState | None:
    for recorded in events:
        event = decode(recorded)
        if not isinstance(event, UnknownEvent):
            state = evolve(state, event, recorded)
    return state


# --- the stage timeline ----------------------------------------------------------------------

_RESULTS: dict[type[ev.Event], ev.Stage] = {
    ev.DocumentConverted: "convert",
    ev.ConversionFailed: "convert",
    ev.DocumentChunked: "chunk",
    ev.ChunkingUnchanged: "chunk",
    ev.ChunkingFailed: "chunk",
    ev.ChunksEmbedded: "embed",
    ev.EmbeddingFailed: "embed",
}
# A ChunkingUnchanged asks the embed stage only for models that have not embedded the set yet.
_TRIGGERS = {k: v for k, v in STAGE_FOR.items() if k is not ev.ChunkingUnchanged}
_DETAIL_KEYS = ("backend", "pipeline", "page_count", "model", "provider", "dimensions", "reused_count", "tokens")


def stage_runs(events: list[RecordedEvent], jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest run of each stage: queued/running/done/retrying/failed with timestamps and seconds."""
    runs: dict[str, dict[str, Any]] = {}
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.DocumentDeleted):
            break
        result_stage = _RESULTS.get(type(event))  # type: ignore[arg-type]
        if result_stage is not None:
            run = runs.setdefault(result_stage, _run(result_stage, None))
            run["finished_at"] = recorded.recorded_at
            if isinstance(event, ev.StageFailed):
                run["status"] = "failed" if event.final else "retrying"
                run["attempts"] = event.attempt or run["attempts"] or 1
                run["error"] = {"class": event.error_class, "message": event.message}
            else:
                run["status"] = "done"
                run["error"] = None
                fields = msgspec.to_builtins(event)
                run["details"] = {k: fields[k] for k in _DETAIL_KEYS if k in fields}
                if isinstance(event, ev.DocumentConverted):
                    run["details"]["durations"] = fields["durations"]
            if run["queued_at"] is not None:
                run["duration_s"] = round((recorded.recorded_at - run["queued_at"]).total_seconds(), 3)
        trigger_stage = _TRIGGERS.get(type(event))  # type: ignore[arg-type]
        if trigger_stage is not None:
            runs[trigger_stage] = _run(trigger_stage, recorded)
    for job in jobs:  # the queue knows whether a stage is running right now
        current = runs.get(job["stage"])
        if current is not None and current["status"] in ("queued", "retrying") and job["status"] == "running":
            current["status"] = "running"
            current["attempts"] = job["attempts"]
    return [runs.get(stage) or _run(stage, None, status="pending") for stage in ev.STAGES]


def _run(stage: str, trigger: RecordedEvent | None, status: str = "queued") -> dict[str, Any]:
    return {
        "stage": stage,
        "status": status,
        "queued_at": trigger.recorded_at if trigger is not None else None,
        "finished_at": None,
        "duration_s": None,
        "attempts": 0,
        "error": None,
        "details": {},
    }


def cost_summary(events: list[RecordedEvent]) -> dict[str, Any]:
    total = Decimal(0)
    by_stage: dict[str, Decimal] = {}
    lines = []
    for recorded in events:
        if recorded.type != ev.CostIncurred.TYPE:
            continue
        cost = decode(recorded)
        assert isinstance(cost, ev.CostIncurred)
        amount = Decimal(str(cost.amount_usd))
        total += amount
        by_stage[cost.stage] = by_stage.get(cost.stage, Decimal(0)) + amount
        lines.append(
            {
                "stage": cost.stage,
                "provider": cost.provider,
                "resource": cost.resource,
                "quantity": cost.quantity,
                "amount_usd": float(amount),
                "recorded_at": recorded.recorded_at,
            }
        )
    return {"total_usd": float(total), "by_stage": {k: float(v) for k, v in by_stage.items()}, "lines": lines}


def failures(events: list[RecordedEvent]) -> list[dict[str, Any]]:
    out = []
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.StageFailed):
            out.append(
                {
                    "stage": event.STAGE,
                    "error_class": event.error_class,
                    "message": event.message,
                    "attempt": event.attempt,
                    "final": event.final,
                    "recorded_at": recorded.recorded_at,
                }
            )
    return out


def state_json(state: DocumentState) -> dict[str, Any]:
    """A document as the API and ``--json`` listings show it (the documents row's columns)."""
    out = {k: v for k, v in state.row().items() if k not in ("stream_version", "sha256", "state")}
    out["total_cost_usd"] = float(state.total_cost_usd)
    out["searchable"] = state.serving_chunk_set_id is not None
    return out


async def document_view(pool: asyncpg.Pool, store: EventStore, document_id: str) -> dict[str, Any]:
    """Everything about one document: its row, sha256, stream position, stage timeline, costs, errors."""
    state, events = await read_document(store, document_id)
    jobs = [dict(r) for r in await pool.fetch(query("api", "document_jobs"), uuid.UUID(state.document_id))]
    body = state_json(state)
    body.update(
        sha256=state.sha256,
        stream_version=events[-1].stream_version,
        last_position=max(e.position for e in events),
        stages=stage_runs(events, jobs),
        costs=cost_summary(events),
        errors=failures(events),
    )
    return body


# --- listing documents (the documents projection) -------------------------------------------

STATUSES = tuple(s.value for s in Status)


def parse_statuses(raw: str | None) -> list[str] | None:
    """``searchable,failed`` → a list of statuses (None: every status); InvalidRequest for unknown ones."""
    if not raw:
        return None
    statuses = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise InvalidRequest(f"unknown status {unknown[0]!r}; one of {', '.join(STATUSES)}")
    return statuses or None


def document_row(row: asyncpg.Record) -> dict[str, Any]:
    """A documents row as listings show it (ids as strings, amounts as numbers)."""
    out = {k: v for k, v in dict(row).items() if k not in ("stream_version", "sha256")}
    out["document_id"] = str(out["document_id"])
    if out.get("total_cost_usd") is not None:
        out["total_cost_usd"] = float(out["total_cost_usd"])
    return out


async def list_documents(
    pool: asyncpg.Pool,
    statuses: list[str] | None = None,
    limit: int | None = None,
    page_size: int = 500,
    collections: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Documents newest first from the ``documents`` projection (every one unless ``limit``), the
    same rows and order as ``GET /documents``; ``collections``: only those (None: all)."""
    out: list[dict[str, Any]] = []
    after: tuple[Any, Any] = (None, None)
    while limit is None or len(out) < limit:
        size = page_size if limit is None else min(page_size, limit - len(out))
        rows = await pool.fetch(query("api", "documents_page"), statuses, after[0], after[1], size, collections)
        out += [document_row(r) for r in rows]
        if len(rows) < size:
            break
        last = rows[-1]
        after = (last["uploaded_at"] or _EPOCH, last["document_id"])
    return out


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# --- watching documents until they are final (chronos ingest --wait) --------------------------


@dataclass
class Watch:
    """States of a set of documents, brought up to date from the log by reading only the events each
    stream gained since the last look (a stream's versions are contiguous, so nothing is missed)."""

    states: dict[str, DocumentState | None]
    versions: dict[str, int]

    @classmethod
    def of(cls, document_ids: list[str]) -> Watch:
        ids = list(dict.fromkeys(document_ids))
        return cls({d: None for d in ids}, {d: 0 for d in ids})

    async def refresh(self, pool: asyncpg.Pool) -> dict[str, DocumentState | None]:
        ids = list(self.states)
        rows = await pool.fetch(query("pipeline", "stream_tails"), [stream_for(d) for d in ids],
                                [self.versions[d] for d in ids])  # fmt: skip
        for row in rows:
            recorded = RecordedEvent(
                position=row["position"], tx_id=row["tx_id"], event_id=row["event_id"], stream_id=row["stream_id"],
                stream_version=row["stream_version"], type=row["type"], schema_version=row["schema_version"],
                data=row["data"], metadata=row["metadata"], recorded_at=row["recorded_at"],
            )  # fmt: skip
            doc = document_id_from_stream(recorded.stream_id) or ""
            self.states[doc] = fold_typed([recorded], self.states[doc])
            self.versions[doc] = recorded.stream_version
        return dict(self.states)

    @property
    def all_final(self) -> bool:
        return all(s is not None and s.final for s in self.states.values())


async def document_states(pool: asyncpg.Pool, document_ids: list[str]) -> dict[str, DocumentState]:
    """The states of the documents that exist among ``document_ids``, straight from the log."""
    states = await Watch.of(document_ids).refresh(pool)
    return {d: s for d, s in states.items() if s is not None}


# --- revisions (chronos history, GET /documents/{id}/revisions) --------------------------------


def revisions(events: list[RecordedEvent], state: DocumentState) -> list[dict[str, Any]]:
    """Each revision of a document: where its content came from, what each stage made of it (or why it
    failed), what it cost, and whether search answers from it. Events written before revisions carry no
    revision: they belong to the revision current where they stand in the stream."""
    out: dict[int, dict[str, Any]] = {}
    made_for: dict[str, int] = {}  # result event id -> revision (costs follow their result)
    current = 0
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.DocumentUploaded):
            current = event.revision
            out[current] = {
                "revision": current, "uploaded_at": recorded.recorded_at, "filename": event.filename,
                "media_type": event.media_type, "size": event.size, "sha256": event.sha256, "source": event.source,
                "source_ref": event.source_ref, "key": event.key, "actor": recorded.metadata.get("actor"),
                "stages": {}, "failure": None, "cost_usd": 0.0, "serving": False, "deleted_at": None,
            }  # fmt: skip
            continue
        revision = getattr(event, "revision", None) or current
        row = out.get(revision)
        if row is None:
            continue
        made_for[str(recorded.event_id)] = revision
        stage = _RESULTS.get(type(event))  # type: ignore[arg-type]
        if isinstance(event, ev.StageFailed):
            row["failure"] = {"stage": event.STAGE, "error_class": event.error_class, "message": event.message,
                              "final": event.final, "at": recorded.recorded_at}  # fmt: skip
        elif stage is not None:
            fields = msgspec.to_builtins(event)
            row["stages"][stage] = {"at": recorded.recorded_at, **{k: fields[k] for k in _DETAIL_KEYS if k in fields}}
            if isinstance(event, ev.DocumentChunked):
                row["stages"][stage]["chunk_count"] = len(event.chunks)
            if stage == "embed" or isinstance(event, ev.DocumentConverted):
                row["failure"] = None if row["failure"] and row["failure"]["stage"] == stage else row["failure"]
        elif isinstance(event, ev.CostIncurred):
            target = out.get(made_for.get(event.caused_by, revision))
            if target is not None:
                target["cost_usd"] = round(target["cost_usd"] + event.amount_usd, 10)
        elif isinstance(event, ev.DocumentDeleted):
            row["deleted_at"] = recorded.recorded_at
    if state.serving_revision in out and not state.deleted:
        out[state.serving_revision]["serving"] = True
    return [out[r] for r in sorted(out)]


def resolve_document(id_or_key: str) -> str:
    """A document id given as its UUID or as its key (``directus:<id>``, ``api:<id>``, ``folder:…``)."""
    from app.catalogue.ids import document_id_for_key

    try:
        return str(uuid.UUID(id_or_key))
    except ValueError:
        if ":" in id_or_key:
            return str(document_id_for_key(id_or_key))
        return parse_document_id(id_or_key)  # raises DocumentNotFound with its hint


async def history(store: EventLog, id_or_key: str) -> dict[str, Any]:
    """``chronos history`` and ``GET /documents/{id}/revisions``: the document and every revision."""
    state, events = await read_document(store, resolve_document(id_or_key))
    return {
        "document_id": state.document_id, "key": state.document_key, "status": state.status.value,
        "revision": state.revision, "serving_revision": None if state.deleted else state.serving_revision,
        "revisions": revisions(events, state),
    }  # fmt: skip
