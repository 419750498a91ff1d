"""The dispatcher: a subscription that turns events asking for work into jobs.

It runs in every worker process; the subscription's checkpoint makes the copies take turns, and
jobs are inserted in the same transaction as the checkpoint, so each event yields its job once.
"""

from __future__ import annotations

import uuid
from typing import Any

from app import config
from app.catalogue import events as ev
from app.catalogue.codec import decode
from app.pipeline import jobs, lanes
from events.sqlfiles import query
from events.types import DbConn, RecordedEvent

NAME = "dispatcher"

STAGE_FOR: dict[type[ev.Event], ev.Stage] = {  # the event that makes a stage's job
    ev.DocumentUploaded: "convert",
    ev.ConversionRequested: "convert",
    ev.DocumentConverted: "chunk",
    ev.ChunkingRequested: "chunk",
    ev.DocumentChunked: "embed",
    ev.ChunkingUnchanged: "embed",  # the embed stage skips models that already embedded the set
    ev.EmbeddingRequested: "embed",
}
_TYPES = frozenset(cls.TYPE for cls in STAGE_FOR) | {ev.DocumentDeleted.TYPE}


def job_params(event: ev.Event) -> dict[str, Any]:
    """What the stage's job needs to know of the event that asked for it."""
    match event:
        case ev.ConversionRequested():
            return {"backend": event.backend, "pipeline": event.pipeline, "request_id": event.request_id}
        case ev.DocumentConverted():
            return {"conversion_id": event.conversion_id}
        case ev.ChunkingRequested():
            return {
                "chunk_size": event.chunk_size,
                "chunk_overlap": event.chunk_overlap,
                "context_template": event.context_template,
                "request_id": event.request_id,
            }
        case ev.DocumentChunked() | ev.ChunkingUnchanged():
            return {"chunk_set_id": event.chunk_set_id}
        case ev.EmbeddingRequested():
            return {"model": event.model, "request_id": event.request_id}
    return {}


async def dispatch(conn: DbConn, events: list[RecordedEvent]) -> None:
    """Subscription handler: enqueue one job per work-asking event, each in its lane
    (app/pipeline/lanes.py); cancel work of deleted documents."""
    enqueued = 0
    settings = config.current().lanes
    for recorded in events:
        if recorded.type not in _TYPES:
            continue
        event = decode(recorded)
        if isinstance(event, ev.DocumentDeleted):
            await conn.execute(query("jobs", "cancel_document"), uuid.UUID(event.document_id))
            continue
        if not isinstance(event, ev.DocumentEvent):
            continue
        stage = STAGE_FOR.get(type(event))
        if stage is None:
            continue
        params = {k: v for k, v in job_params(event).items() if v is not None}
        revision = getattr(event, "revision", None)
        if revision is not None:
            params["revision"] = revision  # the job works for this revision; a newer one supersedes it
        await jobs.enqueue(
            conn,
            document_id=event.document_id,
            stage=stage,
            trigger_event_id=recorded.event_id,
            trigger_position=recorded.position,
            params=params,
            lane=lanes.requested_lane(event, settings),
            interactive_depth=settings.interactive_depth,
        )
        enqueued += 1
    if enqueued:
        await conn.execute("SELECT pg_notify($1, $2)", jobs.JOBS_CHANNEL, str(enqueued))
