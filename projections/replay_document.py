"""``chronos replay --document ID``: rebuild one document's rows in the live projections.

For each projector, in one transaction: lock its checkpoint (the live projector waits), delete the
document's rows from every table the projector keys by document, and apply again the document
stream's events that the checkpoint already covers, in stream order. Events after the checkpoint are
left to the live projector, which resumes when the lock goes. Readers see the old rows or the new,
never none: the transaction commits both at once. Like a full replay, it reads only the log and the
blob store (no model call).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from app.catalogue.ids import stream_for
from events.blobs import PgBlobStore
from events.errors import InvalidRequest, NotFound
from events.sqlfiles import query
from events.store import to_event
from projections.base import Conn, Projector
from projections.runner import all_projectors


@dataclass
class DocumentReplay:
    projection: str
    documents: int
    events: int
    rows_deleted: int


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _forget(conn: Conn, projector: Projector, ids: list[uuid.UUID]) -> int:
    deleted = 0
    for r in await conn.fetch(query("projections", "document_keyed_tables"), list(projector.tables)):
        status = await conn.execute(f"DELETE FROM {_ident(r['table_name'])} WHERE document_id = ANY ($1::uuid[])", ids)
        deleted += int(status.split()[-1])
    return deleted


async def replay_documents(
    pool: asyncpg.Pool, document_ids: list[str], names: list[str] | None = None
) -> list[DocumentReplay]:
    """Rebuild the given documents in the named projections (all when None)."""
    ids: list[uuid.UUID] = []
    for raw in document_ids:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            raise InvalidRequest(f"{raw!r} is not a document id (a UUID, as `chronos ingest` prints)") from None
    streams = [stream_for(str(i)) for i in ids]
    known = {str(r["stream_id"]) for r in await pool.fetch(query("projections", "streams_present"), streams)}
    missing = [str(i) for i, s in zip(ids, streams, strict=True) if s not in known]
    if missing:
        raise NotFound(f"no events for document(s) {', '.join(missing)}; nothing to replay")
    projectors = [p for p in all_projectors(PgBlobStore(pool)) if p.per_document and (names is None or p.name in names)]
    out: list[DocumentReplay] = []
    for projector in projectors:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(query("events", "checkpoint_ensure"), projector.subscription)
            cp = await conn.fetchrow(query("events", "checkpoint_lock"), projector.subscription)
            assert cp is not None
            deleted = await _forget(conn, projector, ids)
            rows = await conn.fetch(
                query("projections", "document_events_upto"), streams, str(cp["tx_id"]), cp["position"]
            )
            events = [to_event(r) for r in rows]
            if events:
                await projector.apply(conn, events)
        out.append(DocumentReplay(projector.name, len(ids), len(events), deleted))
    return out
