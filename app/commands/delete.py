"""``chronos delete ID…`` and ``chronos gc``: delete documents, then collect their blobs.

Deleting appends ``DocumentDeleted``; the projections drop the document's chunks, vectors and cache
rows (the ``documents`` row stays with status ``deleted``). Blob GC: a blob is removed when the
events of deleted documents name it and no event of a non-deleted document does (content is shared
by hash, so a blob another document uses stays). Blobs no event names are never touched here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

import asyncpg
import orjson

from app import domain
from app.runtime import open_runtime
from events.blobs import PgBlobStore
from events.sqlfiles import query
from events.store import EventStore
from events.types import NewEvent
from projections.runner import catch_up_all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("delete", help="delete documents (DocumentDeleted) and garbage-collect their blobs")
    p.add_argument("document_id", nargs="+")
    p.add_argument("--reason", default="deleted by cli")
    p.add_argument("--keep-blobs", action="store_true", help="skip blob garbage collection")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)
    g = sub.add_parser(
        "gc", help="remove blobs only deleted documents reference, blobs no event names, and interrupted uploads"
    )
    g.add_argument(
        "--grace-minutes",
        type=float,
        default=60.0,
        help="leave unreferenced blobs and unfinished uploads younger than this alone (default 60)",
    )
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=gc_main)


async def delete_documents(store: EventStore, ids: list[str], reason: str, actor: str = "cli") -> list[str]:
    """Append DocumentDeleted for each existing, not yet deleted document; returns those deleted."""
    done = []
    for raw in ids:
        doc = str(uuid.UUID(raw))
        events = await store.read_stream(domain.stream_for(doc))
        if not any(e.type == domain.DOCUMENT_UPLOADED for e in events):
            raise ValueError(f"no document {doc}: see `chronos events list` or the documents table")
        marks = [e for e in events if e.type in (domain.DOCUMENT_UPLOADED, domain.DOCUMENT_DELETED)]
        if marks[-1].type == domain.DOCUMENT_DELETED:
            continue
        data: domain.DocumentDeletedData = {"document_id": doc, "reason": reason}
        await store.append(
            domain.stream_for(doc),
            [NewEvent(domain.DOCUMENT_DELETED, dict(data), {"actor": actor})],
            events[-1].stream_version,
        )
        done.append(doc)
    return done


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


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        deleted = await delete_documents(rt.store, args.document_id, args.reason)
        await catch_up_all(rt.pool, rt.dsn)
        removed = 0 if args.keep_blobs else await collect_blobs(rt.pool)
    if args.json:
        print(orjson.dumps({"deleted": deleted, "blobs_removed": removed}).decode())
    else:
        print(f"deleted {len(deleted)} document(s); removed {removed} blob(s)")
    return 0


async def gc_main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        removed = await collect_blobs(rt.pool, dt.timedelta(minutes=args.grace_minutes))
        removed += await rt.blobs.collect_orphans(dt.timedelta(minutes=args.grace_minutes))
    print(orjson.dumps({"blobs_removed": removed}).decode() if args.json else f"removed {removed} blob(s)")
    return 0
