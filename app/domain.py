"""The document event catalogue: stream names, event types and their payloads (schema version 1).

This module is the contract between intake, the stage workers, the projections and the API.
Payloads are plain JSON objects; the TypedDicts below document (and type-check) their fields.
Every event of a document lives in the stream ``document-<document_id>``. Metadata carries
``correlation_id`` (the upload or request that started the work), ``causation_id`` (the event id
that caused this one) and ``actor`` (``cli``, ``api``, ``worker:<host>:<pid>``, ``directus``...).

Blob references are ``{"sha256": ..., "size": ..., "media_type": ...}`` (events.blobs.BlobRef).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, NotRequired, TypedDict

DOCUMENT_NAMESPACE = uuid.UUID("6f1d7a2e-5c3b-4e8f-9a0d-2b7c4e1f8a63")

# --- event types -------------------------------------------------------------------------------
DOCUMENT_UPLOADED = "DocumentUploaded"
CONVERSION_REQUESTED = "ConversionRequested"  # reprocess --stage convert
DOCUMENT_CONVERTED = "DocumentConverted"
CONVERSION_FAILED = "ConversionFailed"
CHUNKING_REQUESTED = "ChunkingRequested"  # reprocess --stage chunk
DOCUMENT_CHUNKED = "DocumentChunked"
CHUNKING_FAILED = "ChunkingFailed"
CHUNKING_UNCHANGED = "ChunkingUnchanged"  # a re-chunk whose result is the current chunk set already
EMBEDDING_REQUESTED = "EmbeddingRequested"  # reprocess --stage embed (e.g. a new model)
CHUNKS_EMBEDDED = "ChunksEmbedded"
EMBEDDING_FAILED = "EmbeddingFailed"
EMBEDDINGS_CACHED = "EmbeddingsCached"  # paid-for vectors outside a complete ChunksEmbedded (docs/embedding.md)
EMBEDDING_BATCH_SUBMITTED = "EmbeddingBatchSubmitted"  # an OpenAI Batch API job (stream embedding-batch-<id>)
EMBEDDING_BATCH_FINISHED = "EmbeddingBatchFinished"  # its end: completed, expired, cancelled or failed
COST_INCURRED = "CostIncurred"
DOCUMENT_DELETED = "DocumentDeleted"

STAGES = ("convert", "chunk", "embed")
Stage = Literal["convert", "chunk", "embed"]
FINAL_STATUSES = ("searchable", "failed", "deleted")


def stream_for(document_id: str | uuid.UUID) -> str:
    return f"document-{document_id}"


def document_id_from_stream(stream_id: str) -> str | None:
    return stream_id.removeprefix("document-") if stream_id.startswith("document-") else None


def document_id_for_content(sha256: str) -> uuid.UUID:
    """Same content, same document: the id is derived from the content hash (``--force`` uses uuid4)."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, sha256)


class BlobRefJSON(TypedDict):
    sha256: str
    size: int
    media_type: str | None


class DocumentUploadedData(TypedDict):
    document_id: str
    filename: str  # display name only, never used as a path
    media_type: str  # sniffed from content, not the extension
    size: int
    sha256: str
    blob: BlobRefJSON
    source: str  # "cli" | "api" | "directus"
    source_ref: NotRequired[str | None]  # e.g. the Directus file id, or the original path
    declared_media_type: NotRequired[str | None]  # what the uploader/extension claimed


class ConversionRequestedData(TypedDict):
    document_id: str
    request_id: str
    backend: str  # "auto" | "modal" | "local"
    pipeline: NotRequired[str | None]  # "native" | "standard" | None (default)
    reason: str


class DurationsJSON(TypedDict):
    total_s: float  # wall time of the whole stage, including queueing at the backend
    convert_s: float  # time Docling spent converting
    queue_s: NotRequired[float]


class FallbackJSON(TypedDict):
    from_backend: str  # "modal"
    reason: str  # "unreachable" | "unauthenticated" | "timeout" | "error"
    message: str


class DocumentConvertedData(TypedDict):
    document_id: str
    conversion_id: str
    input_sha256: str
    backend: str  # "local" | "modal"
    pipeline: str  # "native" | "standard" | "simple" (office/web/markdown backends) | ...
    docling_version: str
    page_count: int
    durations: DurationsJSON
    docling_json: BlobRefJSON  # DoclingDocument JSON
    markdown: BlobRefJSON
    settings_hash: str  # hash of backend-independent settings, used to reuse earlier output
    fallback: NotRequired[FallbackJSON | None]
    reused_from: NotRequired[str | None]  # conversion_id reused instead of converting again
    slices: NotRequired[list[list[int]] | None]  # page ranges when converted in slices
    gpu: NotRequired[str | None]  # Modal GPU type


class StageFailedData(TypedDict):
    """Payload of ConversionFailed, ChunkingFailed and EmbeddingFailed."""

    document_id: str
    stage: str
    error_class: str  # e.g. "UnsupportedMediaType", "PasswordProtected", "Timeout", "MemoryLimit"
    message: str  # clear, human-readable reason
    attempt: int
    retryable: bool
    final: bool  # True: no more attempts; the document is failed (quarantined) with this reason
    backend: NotRequired[str | None]


class ChunkJSON(TypedDict):
    ordinal: int
    text: str
    text_sha256: str
    pages: list[int]
    heading_path: list[str]
    char_start: int  # offsets into the converted Markdown
    char_end: int
    token_count: int


class ChunkParametersJSON(TypedDict):
    splitter: str  # e.g. "markdown+sentence"
    chunk_size: int  # tokens, after capping by the embedder's window
    chunk_overlap: int
    requested_chunk_size: int
    tokenizer: str
    embedder_max_tokens: int


class ChunkingRequestedData(TypedDict):
    document_id: str
    request_id: str
    chunk_size: NotRequired[int | None]
    chunk_overlap: NotRequired[int | None]
    reason: str


class DocumentChunkedData(TypedDict):
    document_id: str
    chunk_set_id: str
    conversion_id: str
    parameters: ChunkParametersJSON
    chunks: list[ChunkJSON]


class ChunkingUnchangedData(TypedDict):
    """A chunk job whose settings and conversion give the chunk set that is already current: nothing
    new is appended (a second DocumentChunked with the same id would double its rows downstream)."""

    document_id: str
    chunk_set_id: str
    conversion_id: str
    request_id: NotRequired[str | None]


class EmbeddingRequestedData(TypedDict):
    document_id: str
    request_id: str
    model: str  # e.g. "local:all-MiniLM-L6-v2" or "openai:text-embedding-3-small"
    reason: str


class ChunksEmbeddedData(TypedDict):
    document_id: str
    chunk_set_id: str
    model: str  # provider-qualified model name, as stored in vectors.model
    provider: str  # "local" | "openai"
    dimensions: int
    vectors: BlobRefJSON  # float32, row-major, shape (chunk_count, dimensions), rows in ordinal order
    chunk_count: int
    reused_count: int  # vectors taken from the embedding cache instead of computed
    tokens: int


class EmbeddingsCachedData(TypedDict):
    """Vectors that were made and paid for, but are not (yet) a document's complete ChunksEmbedded: the
    requests that succeeded before a later one failed for good, or the finished lines of a Batch API job
    that did not finish. The embedding cache keeps them, so a retry pays only for what is missing; each
    paid request has its own CostIncurred (caused_by = this event)."""

    document_id: str
    chunk_set_id: str  # the chunk set whose texts these are
    model: str  # provider-qualified, as in ChunksEmbedded
    provider: str
    dimensions: int
    vectors: BlobRefJSON  # float32, row-major, one row per text_sha256 entry
    text_sha256: list[str]
    tokens: int  # billed for these vectors
    reason: str  # why they are not a ChunksEmbedded: the failure that stopped the rest


class EmbeddingBatchDocumentJSON(TypedDict):
    document_id: str
    chunk_set_id: str
    request_id: str  # of the EmbeddingRequested appended for it (marked with the batch_id)
    custom_ids: list[str]  # lines of the batch input carrying this document's texts


class EmbeddingBatchSubmittedData(TypedDict):
    batch_id: str  # ours (uuid); the stream is embedding-batch-<batch_id>
    openai_batch_id: str
    input_file_id: str
    input: BlobRefJSON  # the JSONL as uploaded (custom_id -> texts, for the results)
    model: str  # provider-qualified
    dimensions: int
    documents: list[EmbeddingBatchDocumentJSON]
    requests: int
    inputs: int
    estimated_tokens: int
    scope: str | None  # "all": a model switch


class EmbeddingBatchFinishedData(TypedDict):
    batch_id: str
    openai_batch_id: str
    status: str  # "completed" | "expired" | "cancelled" | "failed"
    output: BlobRefJSON | None  # the output file as downloaded
    errors: BlobRefJSON | None  # the error file as downloaded
    embedded_documents: list[str]
    incomplete_documents: dict[str, str]  # document_id -> why it got no ChunksEmbedded
    tokens: int
    amount_usd: float


class CostIncurredData(TypedDict):
    document_id: str | None
    stage: str  # "convert" | "embed" | "search"
    provider: str  # "modal" | "local" | "openai"
    resource: str  # "gpu_seconds" | "cpu_seconds" | "tokens"
    quantity: float
    unit_price_usd: float
    amount_usd: float
    caused_by: str  # event id of the result this cost belongs to
    details: NotRequired[dict[str, Any]]


class DocumentDeletedData(TypedDict):
    document_id: str
    reason: str


CHUNK_NAMESPACE = uuid.UUID("0b4f3c9e-8d21-4a6b-b5e7-3f9a1c2d7e40")


def chunk_id_for(chunk_set_id: str, ordinal: int) -> uuid.UUID:
    """Chunk ids are derived from the chunk set and ordinal, so replay reproduces them exactly."""
    return uuid.uuid5(CHUNK_NAMESPACE, f"{chunk_set_id}:{ordinal}")


def result_event_id(job_key: str, kind: str) -> uuid.UUID:
    """Deterministic id for a stage's result event: a retried job re-appends the same id, which
    the store treats as an idempotent no-op, and a worker can see the work is already recorded."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"{job_key}:{kind}")
