"""Every event type a document's stream can hold, as frozen classes (msgspec structs).

A class's fields are its payload; ``TYPE`` is the stored ``type`` and ``VERSION`` the stored
``schema_version``. Payloads written by an older version are upcast by ``codec`` before they are
turned into these classes, so readers only ever see the current shape. Unknown payload fields are
ignored on reading (a newer writer may add some); missing optional fields take their defaults.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

Stage = Literal["convert", "chunk", "embed"]
STAGES: tuple[Stage, ...] = ("convert", "chunk", "embed")


class Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Base of payload parts: frozen, keyword-only."""


class BlobRef(Struct, frozen=True):
    """Bytes in the blob store, by content hash (events.blobs.BlobRef)."""

    sha256: str
    size: int
    media_type: str | None = None

    @classmethod
    def of(cls, blob: Any) -> BlobRef:
        """From an ``events.blobs.BlobRef`` (what the blob store returns)."""
        return cls(sha256=blob.sha256, size=blob.size, media_type=blob.media_type)


class Event(Struct, frozen=True):
    """Base of every event payload."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


class DocumentEvent(Event, frozen=True):
    """An event of one document's stream."""

    document_id: str


# --- intake ----------------------------------------------------------------------------------


class DocumentUploaded(DocumentEvent, frozen=True):
    """New content for a document: its first revision, a new revision under its key, or the same
    content again after a deletion (docs/revisions.md)."""

    TYPE: ClassVar[str] = "DocumentUploaded"
    filename: str  # display name only, never used as a path
    media_type: str  # sniffed from the content, not the extension
    size: int
    sha256: str
    blob: BlobRef
    source: str  # "cli" | "api" | "directus"
    source_ref: str | None = None  # e.g. the Directus file id, or the original path
    declared_media_type: str | None = None  # what the uploader or the extension claimed
    key: str | None = None  # the logical document's key ("directus:<id>", "api:<id>", "folder:<src>:<path>")
    revision: int = 1  # 1, 2, ... within the document
    collection: str = "default"  # docs/collections.md; part of the document id outside ``default``
    metadata: dict[str, Any] = {}  # merged into the document's metadata (app.catalogue.collections.apply_metadata)


MetadataMode = Literal["merge", "replace"]


class DocumentMetadataUpdated(DocumentEvent, frozen=True):
    """New metadata for a document: no re-conversion, no model call. ``merge``: the top-level keys given
    replace the document's (a key given as null is removed); ``replace``: the object given is the whole
    metadata."""

    TYPE: ClassVar[str] = "DocumentMetadataUpdated"
    metadata: dict[str, Any]
    mode: MetadataMode = "merge"


class DocumentDeleted(DocumentEvent, frozen=True):
    TYPE: ClassVar[str] = "DocumentDeleted"
    reason: str = ""


# --- requests (chronos reprocess / POST /documents/{id}/reprocess) -----------------------------


class ConversionRequested(DocumentEvent, frozen=True):
    TYPE: ClassVar[str] = "ConversionRequested"
    request_id: str
    backend: str = "auto"  # "auto" | "modal" | "local"
    pipeline: str | None = None  # "native" | "standard" | None (default)
    reason: str = "reprocess"
    revision: int | None = None  # the revision asked for (None: the one current when it is handled)


class ChunkingRequested(DocumentEvent, frozen=True):
    TYPE: ClassVar[str] = "ChunkingRequested"
    request_id: str
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    reason: str = "reprocess"
    revision: int | None = None
    context_template: str | None = None  # app/chunk_context.py; None: the document's own ("": embed bare)


class EmbeddingRequested(DocumentEvent, frozen=True):
    TYPE: ClassVar[str] = "EmbeddingRequested"
    request_id: str
    model: str  # e.g. "local:all-MiniLM-L6-v2" or "openai:text-embedding-3-small"
    reason: str = "reprocess"
    scope: str | None = None  # "all": a model switch (later documents are embedded with it too)
    batch_id: str | None = None  # an OpenAI Batch API job embeds it (EmbeddingBatchSubmitted), not the embed stage
    revision: int | None = None


REQUESTS: tuple[type[DocumentEvent], ...] = (ConversionRequested, ChunkingRequested, EmbeddingRequested)


# --- results ---------------------------------------------------------------------------------


class Durations(Struct, frozen=True):
    total_s: float  # wall time of the whole stage, including queueing at the backend
    convert_s: float  # time Docling spent converting
    queue_s: float | None = None


class Fallback(Struct, frozen=True):
    """Why Modal was not used although it was asked for."""

    from_backend: str  # "modal"
    reason: str  # "unreachable" | "unauthenticated" | "timeout" | "error"
    message: str


class DocumentConverted(DocumentEvent, frozen=True):
    TYPE: ClassVar[str] = "DocumentConverted"
    conversion_id: str
    input_sha256: str
    backend: str  # "local" | "modal"
    pipeline: str  # "native" | "standard" | "simple" (office/web/markdown backends) | ...
    docling_version: str
    page_count: int
    durations: Durations
    docling_json: BlobRef  # DoclingDocument JSON
    markdown: BlobRef
    settings_hash: str  # hash of backend-independent settings, used to reuse earlier output
    fallback: Fallback | None = None
    reused_from: str | None = None  # conversion_id reused instead of converting again
    slices: list[list[int]] | None = None  # page ranges when converted in slices
    gpu: str | None = None  # Modal GPU type
    revision: int | None = None  # the revision converted (None in payloads older than revisions: 1)


class Chunk(Struct, frozen=True):
    """One chunk's provenance. Its text and heading path are content: since v2 they live in the
    set's content blob (``DocumentChunked.content``), which deleting the document collects; v1 payloads
    carry them inline here."""

    ordinal: int
    text_sha256: str
    pages: list[int] = []
    char_start: int | None = None  # offsets into the converted Markdown
    char_end: int | None = None
    token_count: int | None = None
    text: str | None = None  # v1 only
    heading_path: list[str] | None = None  # v1 only
    embed_sha256: str | None = None  # hash of what was embedded (context + text); None: the text alone


class ChunkContent(Struct, frozen=True):
    """What a chunk says: one entry of a chunk set's content blob (a JSON list in ordinal order)."""

    text: str
    heading_path: list[str] = []
    title: str = ""  # the document's title as the chunk's context names it
    context: str = ""  # what is embedded (and full-text indexed) with the text: title, headings, table header


class ChunkParameters(Struct, frozen=True):
    splitter: str = ""  # e.g. "markdown+sentence"
    chunk_size: int = 0  # tokens, after capping by the embedder's window
    chunk_overlap: int = 0
    requested_chunk_size: int | None = None
    tokenizer: str | None = None
    embedder_max_tokens: int | None = None
    context_template: str | None = None  # app/chunk_context.py; None: chunks embedded bare (older sets)
    context_tokens: int | None = None  # the context's share of the embedder's window


class DocumentChunked(DocumentEvent, frozen=True):
    """A chunk set. v2: the chunks' texts and heading paths are in the ``content`` blob (so that
    deleting the document and collecting its blobs forgets them); v1 had them inline."""

    TYPE: ClassVar[str] = "DocumentChunked"
    VERSION: ClassVar[int] = 2
    chunk_set_id: str
    conversion_id: str
    parameters: ChunkParameters
    chunks: list[Chunk]
    content: BlobRef | None = None  # JSON list of ChunkContent, in ordinal order (None: v1, inline)
    revision: int | None = None


class ChunkingUnchanged(DocumentEvent, frozen=True):
    """A chunk job whose conversion and settings give the chunk set that is current already: the
    request is settled and nothing new is appended (a second copy of a set would double it)."""

    TYPE: ClassVar[str] = "ChunkingUnchanged"
    chunk_set_id: str
    conversion_id: str
    request_id: str | None = None
    revision: int | None = None


class ChunksEmbedded(DocumentEvent, frozen=True):
    TYPE: ClassVar[str] = "ChunksEmbedded"
    chunk_set_id: str
    model: str  # provider-qualified model name, as stored in vectors.model
    provider: str  # "local" | "openai"
    dimensions: int
    vectors: BlobRef  # float32, row-major, shape (chunk_count, dimensions), rows in ordinal order
    chunk_count: int
    reused_count: int = 0  # vectors taken from the embedding cache instead of computed
    tokens: int = 0
    revision: int | None = None


class EmbeddingsCached(DocumentEvent, frozen=True):
    """Vectors that were made and paid for, but are not (yet) a document's complete ChunksEmbedded: the
    requests that succeeded before a later one failed for good, or the finished lines of a Batch API job
    that did not finish. The embedding cache keeps them, so a retry pays only for what is missing; each
    paid request has its own CostIncurred (caused_by = this event)."""

    TYPE: ClassVar[str] = "EmbeddingsCached"
    chunk_set_id: str  # the chunk set whose texts these are
    model: str  # provider-qualified, as in ChunksEmbedded
    provider: str
    dimensions: int
    vectors: BlobRef  # float32, row-major, one row per text_sha256 entry
    text_sha256: list[str]
    tokens: int  # billed for these vectors
    reason: str  # why they are not a ChunksEmbedded: the failure that stopped the rest
    revision: int | None = None


class StageFailed(DocumentEvent, frozen=True):
    """A stage could not produce its result (``final``: nothing is left to try)."""

    STAGE: ClassVar[Stage] = "convert"
    stage: str
    error_class: str  # e.g. "UnsupportedMediaType", "PasswordProtected", "Timeout", "MemoryLimit"
    message: str  # clear, human-readable reason
    attempt: int = 1
    retryable: bool = False
    final: bool = True
    backend: str | None = None
    fallback: Fallback | None = None  # conversion: why Modal was not used
    attempts: list[str] | None = None  # conversion: what the recovery ladder tried
    page_count: int | None = None
    revision: int | None = None


class ConversionFailed(StageFailed, frozen=True):
    TYPE: ClassVar[str] = "ConversionFailed"
    STAGE: ClassVar[Stage] = "convert"


class ChunkingFailed(StageFailed, frozen=True):
    TYPE: ClassVar[str] = "ChunkingFailed"
    STAGE: ClassVar[Stage] = "chunk"


class EmbeddingFailed(StageFailed, frozen=True):
    TYPE: ClassVar[str] = "EmbeddingFailed"
    STAGE: ClassVar[Stage] = "embed"


FAILURES: dict[Stage, type[StageFailed]] = {"convert": ConversionFailed, "chunk": ChunkingFailed,
                                            "embed": EmbeddingFailed}  # fmt: skip


# --- OpenAI Batch API jobs (stream embedding-batch-<batch_id>, app/embedders/batch_jobs.py) -----------


class EmbeddingBatchDocument(Struct, frozen=True):
    """One document of a Batch API job."""

    document_id: str
    chunk_set_id: str
    request_id: str  # of the EmbeddingRequested appended for it (marked with the batch_id)
    custom_ids: list[str]  # lines of the batch input carrying this document's texts
    revision: int | None = None  # the revision the chunk set is of (its results are for it)


class EmbeddingBatchSubmitted(Event, frozen=True):
    """An OpenAI Batch API embedding job was created; its documents' EmbeddingRequested name it."""

    TYPE: ClassVar[str] = "EmbeddingBatchSubmitted"
    batch_id: str  # ours (uuid); the stream is embedding-batch-<batch_id>
    openai_batch_id: str
    input_file_id: str
    input: BlobRef  # the JSONL as uploaded (custom_id -> texts, for the results)
    model: str  # provider-qualified
    dimensions: int
    documents: list[EmbeddingBatchDocument]
    requests: int
    inputs: int
    estimated_tokens: int
    scope: str | None = None  # "all": a model switch


class EmbeddingBatchFinished(Event, frozen=True):
    """A Batch API job ended and its documents' results are recorded (in their own streams)."""

    TYPE: ClassVar[str] = "EmbeddingBatchFinished"
    batch_id: str
    openai_batch_id: str
    status: str  # "completed" | "expired" | "cancelled" | "failed"
    output: BlobRef | None = None  # the output file as downloaded
    errors: BlobRef | None = None  # the error file as downloaded
    embedded_documents: list[str] = []
    incomplete_documents: dict[str, str] = {}  # document_id -> why it got no ChunksEmbedded
    tokens: int = 0
    amount_usd: float = 0.0


# --- costs -----------------------------------------------------------------------------------


class CostIncurred(Event, frozen=True):
    """Spend of one result on one resource. ``document_id`` is None for spend no document owns (a
    search query's embedding)."""

    TYPE: ClassVar[str] = "CostIncurred"
    document_id: str | None
    stage: str  # "convert" | "embed" | "search"
    provider: str  # "modal" | "local" | "openai"
    resource: str  # "gpu_seconds" | "cpu_seconds" | "tokens"
    quantity: float
    unit_price_usd: float
    amount_usd: float
    caused_by: str  # event id of the result this cost belongs to
    details: dict[str, Any] | None = None


# --- monthly budget alerts (stream budget-YYYY-MM, app/alerts/) --------------------------------


class BudgetThresholdCrossed(Event, frozen=True):
    """Month-to-date spend reached ``threshold_pct`` % of the monthly budget. Once per month and
    threshold: the event id is derived from both (app.catalogue.ids.budget_alert_event_id), so
    checkers racing in several processes append it once."""

    TYPE: ClassVar[str] = "BudgetThresholdCrossed"
    month: str  # "YYYY-MM" (UTC)
    threshold_pct: int  # 80 | 100
    spent_usd: float  # month-to-date spend when the crossing was seen
    budget_usd: float
    message: str  # what the webhook's ``text`` says


class BudgetAlertDelivered(Event, frozen=True):
    """The webhook (``CHRONOS_ALERT_WEBHOOK_URL``) accepted the alert ``alert_event_id``."""

    TYPE: ClassVar[str] = "BudgetAlertDelivered"
    alert_event_id: str
    month: str
    threshold_pct: int
    webhook: str  # scheme://host[:port] only: a Slack webhook's path is its secret
    attempts: int
    status_code: int


class BudgetAlertDeliveryFailed(Event, frozen=True):
    """Every attempt to deliver ``alert_event_id`` failed (or the webhook refused it for good); the
    alert stays pending and is tried again later (app/alerts/delivery.py)."""

    TYPE: ClassVar[str] = "BudgetAlertDeliveryFailed"
    alert_event_id: str
    month: str
    threshold_pct: int
    webhook: str
    attempts: int
    error: str
    status_code: int | None = None


# --- API tokens (stream ``token-<token_id>``) --------------------------------------------------

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")


class ApiTokenCreated(Event, frozen=True):
    """A bearer token for the HTTP API. Only its sha256 is stored: the token itself is shown once."""

    TYPE: ClassVar[str] = "ApiTokenCreated"
    token_id: str
    name: str
    scope: Scope  # read < write < admin: each includes the ones before it
    token_sha256: str
    collections: list[str] | None = None  # None: every collection


class ApiTokenRevoked(Event, frozen=True):
    TYPE: ClassVar[str] = "ApiTokenRevoked"
    token_id: str
    reason: str = ""


# --- collections (stream ``collection-<name>``, docs/collections.md) ------------------------------


class CollectionCreated(Event, frozen=True):
    """A collection documents can be uploaded into (``default`` always exists and has no event)."""

    TYPE: ClassVar[str] = "CollectionCreated"
    name: str  # app.catalogue.collections.validate_collection_name
    description: str = ""
    monthly_budget_usd: float | None = None  # None: only the global budget applies


class CollectionBudgetSet(Event, frozen=True):
    """A collection's monthly budget changed (None: removed)."""

    TYPE: ClassVar[str] = "CollectionBudgetSet"
    name: str
    monthly_budget_usd: float | None = None


class SourceSynced(Event, frozen=True):
    """A sync with an external source finished (stream ``sync-<source>``): ``high_water`` is the newest
    change time it took in (the next sync lists files changed after it); the counts are what it did."""

    TYPE: ClassVar[str] = "SourceSynced"
    source: str
    high_water: str | None = None
    uploaded: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0

    def counts(self) -> dict[str, int]:
        return {"uploaded": self.uploaded, "unchanged": self.unchanged, "deleted": self.deleted,
                "rejected": self.rejected}  # fmt: skip


ALL: tuple[type[Event], ...] = (
    DocumentUploaded, DocumentMetadataUpdated, DocumentDeleted, ConversionRequested, ChunkingRequested,
    EmbeddingRequested,
    DocumentConverted, DocumentChunked, ChunkingUnchanged, ChunksEmbedded, EmbeddingsCached,
    ConversionFailed, ChunkingFailed, EmbeddingFailed, CostIncurred,
    EmbeddingBatchSubmitted, EmbeddingBatchFinished, ApiTokenCreated, ApiTokenRevoked,
    BudgetThresholdCrossed, BudgetAlertDelivered, BudgetAlertDeliveryFailed, SourceSynced,
    CollectionCreated, CollectionBudgetSet,
)  # fmt: skip
BY_TYPE: dict[str, type[Event]] = {cls.TYPE: cls for cls in ALL}
