"""Deleting documents and collecting blobs.

Deleting appends ``DocumentDeleted``; the projections drop the document's chunks, vectors and cache
rows (the ``documents`` row stays with status ``deleted``). Blob GC: a blob is removed when the
events of deleted documents name it and no event of a non-deleted document does (content is shared
by hash, so a blob another document uses stays); with a grace period, also blobs no event names
(refused uploads, outputs of jobs that never recorded) and interrupted uploads.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.ids import stream_for
from app.services.documents import parse_document_id, read_document
from events.blobs import PgBlobStore
from events.errors import WrongExpectedVersion
from events.log import EventLog
from events.sqlfiles import query


async def delete_document(store: EventLog, document_id: str, reason: str, actor: str) -> bool:
    """Append DocumentDeleted; False when the document was deleted already. DocumentNotFound when unknown."""
    doc = parse_document_id(document_id)
    for _attempt in range(5):
        state, events = await read_document(store, doc)
        if state.deleted:
            return False
        deleted = ev.DocumentDeleted(document_id=doc, reason=reason)
        try:
            # Expected version: the stream's real last version, so a concurrent upload or request
            # makes this look again instead of deleting on a stale view.
            await store.append(stream_for(doc), [new_event(deleted, {"actor": actor})], events[-1].stream_version)
        except WrongExpectedVersion:
            continue
        return True
    raise WrongExpectedVersion(f"document {doc} kept changing while it was being deleted; try again")


async def delete_documents(store: EventLog, ids: list[str], reason: str, actor: str = "cli") -> list[str]:
    """Delete each document; returns those deleted now (not those deleted before)."""
    return [parse_document_id(d) for d in ids if await delete_document(store, d, reason, actor)]


async def collect_blobs(pool: asyncpg.Pool, unreferenced_older_than: dt.timedelta | None = None) -> int:
    """Remove blobs only deleted documents reference; with ``unreferenced_older_than``, also blobs no
    event names that are older than that (refused uploads, outputs of jobs that never recorded)."""
    blobs = PgBlobStore(pool)
    shas = [r["sha256"] for r in await pool.fetch(query("projections", "gc_candidates"))]
    if unreferenced_older_than is not None:
        cutoff = dt.datetime.now(dt.UTC) - unreferenced_older_than
        shas += [r["sha256"] for r in await pool.fetch(query("projections", "gc_unreferenced"), cutoff)]
    removed = 0
    for sha in shas:
        removed += await blobs.delete(sha)
    return removed


async def gc(pool: asyncpg.Pool, grace: dt.timedelta) -> int:
    """``chronos gc``: every blob that may go, and interrupted uploads older than ``grace``."""
    removed = await collect_blobs(pool, grace)
    return removed + await PgBlobStore(pool).collect_orphans(grace)
