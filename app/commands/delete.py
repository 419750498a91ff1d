"""``chronos delete ID…`` and ``chronos gc``: delete documents, then collect their blobs
(the work is in app/services/delete.py)."""

from __future__ import annotations

import argparse
import datetime as dt

import orjson

from app.runtime import open_runtime
from app.services.delete import collect_blobs, delete_documents, gc
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
        removed = await gc(rt.pool, dt.timedelta(minutes=args.grace_minutes))
    print(orjson.dumps({"blobs_removed": removed}).decode() if args.json else f"removed {removed} blob(s)")
    return 0
