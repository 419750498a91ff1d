"""Every derived identifier, in one place. Ids derive from what makes them unique (content, a job,
a chunk set and ordinal), so retries and replay reproduce them exactly."""

from __future__ import annotations

import hashlib
import uuid

import orjson

DOCUMENT_NAMESPACE = uuid.UUID("6f1d7a2e-5c3b-4e8f-9a0d-2b7c4e1f8a63")
CHUNK_NAMESPACE = uuid.UUID("0b4f3c9e-8d21-4a6b-b5e7-3f9a1c2d7e40")
STREAM_PREFIX = "document-"
QUERY_NAMESPACE = uuid.UUID("3c1f0a8e-6b52-4d7e-9f14-2a8d5e7c9b31")
BATCH_NAMESPACE = uuid.UUID("9a4e2c71-3f5b-4d08-8e6a-1b7c0d9f2e54")
BUDGET_NAMESPACE = uuid.UUID("5d2b8f40-7c19-4e63-a0f5-8e3c6b1d9a27")


def stream_for(document_id: str | uuid.UUID) -> str:
    return f"{STREAM_PREFIX}{document_id}"


def document_id_from_stream(stream_id: str) -> str | None:
    return stream_id.removeprefix(STREAM_PREFIX) if stream_id.startswith(STREAM_PREFIX) else None


TOKEN_STREAM_PREFIX = "token-"


def token_stream(token_id: str | uuid.UUID) -> str:
    return f"{TOKEN_STREAM_PREFIX}{token_id}"


DEFAULT_COLLECTION = "default"
COLLECTION_STREAM_PREFIX = "collection-"


def collection_stream(name: str) -> str:
    """The stream of one collection's events (CollectionCreated, CollectionBudgetSet)."""
    return f"{COLLECTION_STREAM_PREFIX}{name}"


def _in_collection(name: str, collection: str) -> str:
    """The uuid5 name of a document in ``collection``: ``default`` keeps the derivation documents had
    before collections (their ids do not change); any other collection is part of the name, so the
    same bytes or key in two collections are two documents. A sha256 or ``key:`` name never starts
    with ``collection:``, so the two forms cannot meet."""
    return name if collection == DEFAULT_COLLECTION else f"collection:{collection}:{name}"


def document_id_for_content(sha256: str, collection: str = DEFAULT_COLLECTION) -> uuid.UUID:
    """Same content in the same collection, same document: the id of a document without a key."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, _in_collection(sha256, collection))


def document_id_for_key(key: str, collection: str = DEFAULT_COLLECTION) -> uuid.UUID:
    """A logical document: the same key (a Directus file id, an external id, a path in a source) in the
    same collection is the same document whatever its content; new content under it is a new revision."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, _in_collection(f"key:{key}", collection))


def upload_event_id(idempotency_key: str) -> uuid.UUID:
    """An upload retried with the same Idempotency-Key appends the same event: a no-op."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"upload:{idempotency_key}")


def job_id_for(trigger_event_id: uuid.UUID, stage: str) -> uuid.UUID:
    """One job per (event that asks for work, stage): the dispatcher enqueues it once."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"job:{trigger_event_id}:{stage}")


def result_event_id(job_key: str, kind: str) -> uuid.UUID:
    """A stage result's id: a retried job re-appends the same id (an idempotent no-op), so a job can
    see that its work is already recorded and never records (or pays for) it twice."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"{job_key}:{kind}")


def stable_hash(value: object) -> str:
    """sha256 of ``value`` as sorted-key JSON: the same settings give the same hash."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def chunk_set_id_for(conversion_id: str, parameters_hash: str) -> uuid.UUID:
    """The same conversion chunked with the same settings gives the same chunk set."""
    return uuid.uuid5(CHUNK_NAMESPACE, f"{conversion_id}:{parameters_hash}")


def chunk_set_id_again(chunk_set_id: uuid.UUID | str, result_id: uuid.UUID | str) -> uuid.UUID:
    """A set of its own for settings an earlier (no longer current) set of the stream had: a set id
    the stream holds is never appended twice."""
    return uuid.uuid5(CHUNK_NAMESPACE, f"{chunk_set_id}:{result_id}")


def chunk_id_for(chunk_set_id: str | uuid.UUID, ordinal: int) -> uuid.UUID:
    """Chunk ids are derived from the chunk set and ordinal, so replay reproduces them exactly."""
    return uuid.uuid5(CHUNK_NAMESPACE, f"{chunk_set_id}:{ordinal}")


def search_stream(query_id: uuid.UUID) -> str:
    """A paid search query's cost lines have a stream of their own: concurrent searches never contend
    for a stream version."""
    return f"search-{query_id}"


def query_cost_event_id(query_id: uuid.UUID, line: int) -> uuid.UUID:
    return uuid.uuid5(QUERY_NAMESPACE, f"{query_id}:{line}")


def batch_stream(batch_id: str) -> str:
    """The stream of an OpenAI Batch API job (EmbeddingBatchSubmitted, EmbeddingBatchFinished)."""
    return f"embedding-batch-{batch_id}"


def batch_event_id(batch_id: str, *parts: object) -> uuid.UUID:
    """Every event a Batch API job records is named by the batch and what it is for (a document and
    its kind of result), so a poller restarted half-way appends nothing twice."""
    return uuid.uuid5(BATCH_NAMESPACE, ":".join([batch_id, *map(str, parts)]))


def budget_stream(month: str) -> str:
    """The stream of one month's budget alerts (``month``: "YYYY-MM")."""
    return f"budget-{month}"


def budget_alert_event_id(month: str, threshold_pct: int) -> uuid.UUID:
    """One BudgetThresholdCrossed per month and threshold, whoever appends it first."""
    return uuid.uuid5(BUDGET_NAMESPACE, f"{month}:{threshold_pct}")


def budget_delivered_event_id(alert_event_id: str | uuid.UUID) -> uuid.UUID:
    """One BudgetAlertDelivered per alert."""
    return uuid.uuid5(BUDGET_NAMESPACE, f"{alert_event_id}:delivered")
