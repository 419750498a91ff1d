"""The dispatcher: a subscription that turns events asking for work into jobs.

It runs in every worker process; the subscription's checkpoint lock makes them take turns, and
jobs are inserted in the same transaction as the checkpoint, so each event yields its job once.
"""

from __future__ import annotations

from app import domain
from app.pipeline import jobs
from events.sqlfiles import query
from events.types import DbConn, RecordedEvent

NAME = "dispatcher"

STAGE_FOR: dict[str, str] = {  # the event that makes a stage's job (also the API's timeline)
    domain.DOCUMENT_UPLOADED: "convert",
    domain.CONVERSION_REQUESTED: "convert",
    domain.DOCUMENT_CONVERTED: "chunk",
    domain.CHUNKING_REQUESTED: "chunk",
    domain.DOCUMENT_CHUNKED: "embed",
    domain.CHUNKING_UNCHANGED: "embed",  # the embed stage skips models that already embedded the set
    domain.EMBEDDING_REQUESTED: "embed",
}

_PARAMS: dict[str, tuple[str, ...]] = {
    domain.CONVERSION_REQUESTED: ("backend", "pipeline", "request_id"),
    domain.DOCUMENT_CONVERTED: ("conversion_id",),
    domain.CHUNKING_REQUESTED: ("chunk_size", "chunk_overlap", "request_id"),
    domain.DOCUMENT_CHUNKED: ("chunk_set_id",),
    domain.CHUNKING_UNCHANGED: ("chunk_set_id",),
    domain.EMBEDDING_REQUESTED: ("model", "request_id"),
}


async def dispatch(conn: DbConn, events: list[RecordedEvent]) -> None:
    """Subscription handler: enqueue one job per work-asking event; cancel work of deleted documents."""
    enqueued = 0
    for event in events:
        document_id = event.data.get("document_id")
        if not document_id:
            continue
        if event.type == domain.DOCUMENT_DELETED:
            await conn.execute(query("jobs", "cancel_document"), _uuid(document_id))
            continue
        stage = STAGE_FOR.get(event.type)
        if stage is None:
            continue
        params = {k: event.data[k] for k in _PARAMS.get(event.type, ()) if event.data.get(k) is not None}
        await jobs.enqueue(
            conn,
            document_id=document_id,
            stage=stage,
            trigger_event_id=event.event_id,
            trigger_position=event.position,
            params=params,
        )
        enqueued += 1
    if enqueued:
        await conn.execute("SELECT pg_notify($1, $2)", jobs.JOBS_CHANNEL, str(enqueued))


def _uuid(value: str) -> object:
    import uuid

    return uuid.UUID(value)
