"""The API's bodies as types: what each handler returns (and the requests it reads), from which the
OpenAPI document's components are generated (app/api/openapi.py, ``msgspec.json.schema_components``).

Handlers answer through :func:`typed`: the body is converted to its type (a body that does not match —
a missing field, a wrong type, a field the type does not declare — is an error in the handler, caught by
the tests, never a silent drift between the document and the answers) and encoded from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from decimal import Decimal
from typing import Any, Literal, TypeVar

import msgspec
from msgspec import Struct, field

from app.catalogue.state import EXTRA_FIELDS as STATE_EXTRAS
from app.catalogue.state import DocumentState, Status

T = TypeVar("T", bound=Struct)
Json = dict[str, Any]


class Body(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """A response or request body."""


def typed(cls: type[T], body: Any) -> Any:
    """``body`` (a dict) checked against ``cls`` and encoded as that type's JSON builtins."""
    return msgspec.to_builtins(msgspec.convert(body, cls, strict=False))


# --- errors, health --------------------------------------------------------------------------------


class ErrorDetail(Body):
    code: str
    message: str
    incident: str | None = None


class Error(Body):
    error: ErrorDetail


class Health(Body):
    status: str


class Ready(Body):
    ready: bool
    checks: Json


# --- documents --------------------------------------------------------------------------------------


def _document_type() -> type[Body]:
    """A document as the documents projection has it: DocumentState's columns (app/catalogue/state.py),
    made from that class so the two cannot drift; the cost as a number, plus ``searchable``."""
    hints = typing.get_type_hints(DocumentState)
    fields: list[tuple[Any, ...]] = []
    for f in dataclasses.fields(DocumentState):
        if f.name in _NOT_SHOWN:
            continue
        kind = float if hints[f.name] is Decimal else hints[f.name]
        default = float(f.default) if isinstance(f.default, Decimal) else f.default
        if f.default_factory is not dataclasses.MISSING:  # metadata: {}
            default = field(default_factory=f.default_factory)
        elif f.default is dataclasses.MISSING:
            fields.append((f.name, kind))
            continue
        fields.append((f.name, kind, default))
    fields.append(("searchable", bool | None, None))  # in a document's own view, not in listings
    return typing.cast(type[Body], msgspec.defstruct("Document", fields, bases=(Body,), module=__name__))


_NOT_SHOWN = frozenset({"stream_version", "sha256", *STATE_EXTRAS})
if typing.TYPE_CHECKING:

    class Document(Body):
        document_id: str
else:
    Document = _document_type()


class DocumentList(Body):
    documents: list[Document]
    next_cursor: str | None


class StageError(Body):
    class_: str | None = field(default=None, name="class")
    message: str | None = None


class StageRun(Body):
    stage: Literal["convert", "chunk", "embed"]
    status: Literal["pending", "queued", "running", "retrying", "done", "failed", "cancelled"]
    queued_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_s: float | None
    attempts: int = 0
    error: StageError | None = None
    details: Json = {}


class CostSummary(Body):
    total_usd: float
    by_stage: dict[str, float]
    lines: list[Json]


class DocumentFailure(Body):
    stage: str
    error_class: str | None
    message: str | None
    attempt: int | None
    final: bool
    recorded_at: dt.datetime


class DocumentDetail(Document):
    sha256: str | None = None
    stream_version: int = 0
    stages: list[StageRun] = field(default_factory=list)
    costs: CostSummary | None = None
    errors: list[DocumentFailure] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)


class Intake(Body):
    document_id: str
    created: bool
    filename: str
    media_type: str
    size: int
    sha256: str
    position: int
    revision: int = 1
    key: str | None = None
    collection: str = "default"
    metadata_updated: bool = False  # the same content again: its new metadata was recorded
    links: dict[str, str] = {}


class MetadataChange(Body):
    document_id: str
    metadata: Json
    changed: bool  # False: the document had that metadata already (nothing recorded)
    position: int | None


class Revision(Body):
    revision: int
    uploaded_at: dt.datetime
    filename: str
    media_type: str
    size: int
    sha256: str
    source: str
    source_ref: str | None
    key: str | None
    actor: str | None
    stages: dict[str, Json]
    failure: Json | None
    cost_usd: float
    serving: bool
    deleted_at: dt.datetime | None


class DocumentRevisions(Body):
    document_id: str
    key: str | None
    status: Status
    revision: int
    serving_revision: int | None
    revisions: list[Revision]
    links: dict[str, str] = {}


class Chunk(Body):
    chunk_id: str
    chunk_set_id: str
    ordinal: int
    text: str
    pages: list[int]
    heading_path: list[str]
    char_start: int | None = None
    char_end: int | None = None
    token_count: int | None = None


class ChunkList(Body):
    document_id: str
    chunk_set_id: str | None
    serving: bool
    chunks: list[Chunk]
    next_after: int | None


class Deleted(Body):
    document_id: str
    deleted: bool
    already_deleted: bool


class Reprocess(Body):
    document_id: str
    stage: str
    requested: bool
    quote: Json


# --- events -----------------------------------------------------------------------------------------


class Event(Body, omit_defaults=True):  # data/metadata left out when not asked for
    position: int
    cursor: str
    event_id: str
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    document_id: str | None
    recorded_at: dt.datetime
    data: Json | None = None
    metadata: Json | None = None


class EventList(Body):
    events: list[Event]
    next: str
    head: int


class DocumentEvents(Body):
    document_id: str
    events: list[Event]


# --- search and costs -------------------------------------------------------------------------------


class SearchHit(Body):
    chunk_id: str
    document_id: str
    filename: str
    ordinal: int
    text: str
    pages: list[int]
    heading_path: list[str]
    score: float
    model: str
    title: str | None = None
    char_start: int | None = None
    char_end: int | None = None
    snippet: str = ""  # the best-matching sentences, the question's words in **bold**
    mode: str = "vector"
    similarity: float | None = None
    vector_rank: int | None = None
    text_rank: int | None = None
    collection: str = "default"
    metadata: dict[str, Any] = field(default_factory=dict)


class SearchResult(Body):
    query: str
    k: int
    model: str | None
    hits: list[SearchHit]
    mode: str = "hybrid"
    as_of: str | None = None
    note: str | None = None  # why there are no hits, when nothing is searchable


class CostPart(Body):
    stage: str
    provider: str
    usd: float
    overhead_usd: float  # Modal's cold-start and idle share
    collection: str | None = None  # the document's collection; None: a line of no document


class CostDay(Body):
    day: dt.date
    usd: float
    by_stage: dict[str, float] = {}
    by_collection: dict[str, float] = {}  # "(none)": lines of no document
    lines: int = 0
    parts: list[CostPart] = []


class CollectionCost(Body):
    """One collection's month to date against its own budget (None: it has none)."""

    collection: str
    month: str
    spent_usd: float
    budget_usd: float | None
    remaining_usd: float | None
    over_budget: bool


class BudgetAlert(Body):
    alert_id: str
    threshold_pct: int
    crossed_at: dt.datetime
    delivery: Literal["delivered", "failed", "pending"]
    month: str | None = None
    spent_usd: float | None = None
    budget_usd: float | None = None
    message: str | None = None
    delivered_at: dt.datetime | None = None
    attempts: int | None = None
    last_error: str | None = None


class CostMonth(Body):
    month: str | None
    spent_usd: float
    budget_usd: float | None  # None: the collections shown have no budget of their own
    over_budget: bool
    alerts: list[BudgetAlert] = []
    alert_webhook: bool | None = None


class Costs(Body):
    from_: dt.date = field(name="from")
    to: dt.date
    total_usd: float
    days: list[CostDay]
    month: CostMonth
    collection: str | None = None
    collections: list[CollectionCost] = []


# --- Directus ---------------------------------------------------------------------------------------


class DirectusWebhook(Body, forbid_unknown_fields=False):
    """What a Flow's Webhook operation sends with the body ``{{$trigger}}`` (other fields are ignored)."""

    event: str
    key: str | None = None
    keys: list[str] | None = None
    collection: str | None = None
    payload: Json | list[str] | None = None


class DirectusResult(Body):
    ignored: bool
    documents: list[Json]
    deleted: list[str] = []
    reason: str | None = None


# --- requests ---------------------------------------------------------------------------------------


class ReprocessRequest(Body):
    stage: Literal["convert", "chunk", "embed"] | None = None
    backend: Literal["auto", "local", "modal"] | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    context_template: str | None = None  # stage chunk: {title}, {headings}, {table} (docs/search.md); "": bare
    model: str | None = None
    reason: str | None = None
    over_budget: bool = False


class DeleteRequest(Body):
    reason: str | None = None


# --- collections (docs/collections.md) ----------------------------------------------------------------


class Collection(Body):
    name: str
    description: str
    monthly_budget_usd: float | None
    created_at: dt.datetime | None  # None: `default`, which exists from the start
    documents: int = 0  # live documents


class CollectionList(Body):
    collections: list[Collection]


class CollectionCreate(Body):
    name: str
    description: str = ""
    monthly_budget_usd: float | None = None


class CollectionStats(Body):
    name: str
    documents: int  # live documents
    by_status: dict[str, int]
    chunks: int  # chunks search serves
    vectors: int
    bytes: int  # of live documents
    spent_this_month_usd: float  # UTC calendar month
    monthly_budget_usd: float | None


BODIES: tuple[type[Body], ...] = (
    Error, Health, Ready, Document, DocumentList, DocumentDetail, Intake, Revision, DocumentRevisions, Chunk,
    ChunkList, Deleted, Reprocess, Event, EventList, DocumentEvents, SearchResult, Costs, DirectusWebhook,
    DirectusResult, ReprocessRequest, DeleteRequest, MetadataChange, Collection, CollectionList, CollectionCreate,
    CollectionStats,
)  # fmt: skip


def components() -> dict[str, Any]:
    """JSON Schemas of every body, by name, referring to each other as OpenAPI components."""
    _refs, schemas = msgspec.json.schema_components(BODIES, ref_template="#/components/schemas/{name}")
    return schemas
