"""Every derived identifier, in one place. Ids derive from what makes them unique (content, a job,
a chunk set and ordinal), so retries and replay reproduce them exactly."""

from __future__ import annotations

import hashlib
import uuid

import orjson

DOCUMENT_NAMESPACE = uuid.UUID("6f1d7a2e-5c3b-4e8f-9a0d-2b7c4e1f8a63")
CHUNK_NAMESPACE = uuid.UUID("0b4f3c9e-8d21-4a6b-b5e7-3f9a1c2d7e40")
STREAM_PREFIX = "document-"


def stream_for(document_id: str | uuid.UUID) -> str:
    return f"{STREAM_PREFIX}{document_id}"


def document_id_from_stream(stream_id: str) -> str | None:
    return stream_id.removeprefix(STREAM_PREFIX) if stream_id.startswith(STREAM_PREFIX) else None


TOKEN_STREAM_PREFIX = "token-"


def token_stream(token_id: str | uuid.UUID) -> str:
    return f"{TOKEN_STREAM_PREFIX}{token_id}"


def document_id_for_content(sha256: str) -> uuid.UUID:
    """Same content, same document: the id of a document without a key is its content hash's."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, sha256)


def document_id_for_key(key: str) -> uuid.UUID:
    """A logical document: the same key (a Directus file id, an external id, a path in a source) is the
    same document whatever its content; new content under it is a new revision."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"key:{key}")


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
