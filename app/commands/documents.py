"""``chronos documents list [--status S] [--json]`` and ``chronos documents show ID [--json]``: the ids
``delete`` and ``reprocess`` need, and where each document stands.

``list`` reads the ``documents`` projection (brought up to date first, so documents just uploaded by
``chronos ingest`` without ``--wait`` are there); ``show`` reads the document's own stream (stage
timeline, costs, every failure), like ``GET /documents/{id}``. ``chronos documents meta ID k=v …
[--replace] [--json]`` records new metadata (``PATCH /documents/{id}/metadata``): no re-conversion and
no model call.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from app.catalogue.collections import parse_metadata, parse_pairs
from app.errors import InvalidRequest
from app.runtime import open_runtime
from app.services.documents import STATUSES, document_view, list_documents, parse_statuses
from app.services.metadata import update_metadata
from projections.runner import catch_up_all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("documents", help="list documents and their ids, or show one")
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="documents, newest first (id, status, name, chunks, error)")
    ls.add_argument("--status", help=f"only these statuses, comma-separated: {', '.join(STATUSES)}")
    ls.add_argument("--limit", type=int, default=None, help="at most this many (default: all)")
    ls.add_argument("--json", action="store_true", help="one JSON list of documents rows")
    ls.set_defaults(func=listing)
    show = actions.add_parser("show", help="one document: state, stages, costs, errors")
    show.add_argument("document_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=showing)
    meta = actions.add_parser("meta", help="set a document's metadata (no re-conversion, no model call)")
    meta.add_argument("document_id")
    meta.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="values are text; KEY= sets an empty text")
    meta.add_argument("--json-object", metavar="JSON", help="metadata as a JSON object (typed values, null removes)")
    meta.add_argument("--replace", action="store_true", help="the metadata given is the whole of it (default: merge)")
    meta.add_argument("--json", action="store_true")
    meta.set_defaults(func=set_meta)


async def listing(args: argparse.Namespace) -> int:
    statuses = parse_statuses(args.status)
    async with open_runtime() as rt:
        await catch_up_all(rt.pool, rt.dsn)
        rows = await list_documents(rt.pool, statuses, args.limit)
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no documents" + (f" with status {args.status}" if args.status else "") + " (chronos ingest PATH…)")
        return 0
    print(f"{'document_id':<36}  {'status':<10}  {'chunks':>6}  filename")
    for r in rows:
        line = f"{r['document_id']:<36}  {r['status']:<10}  {r['chunk_count'] or 0:>6}  {r['filename']}"
        if r["status"] == "failed" and r.get("error_class"):
            line += f"  [{r['error_class']}: {(r.get('last_error') or '')[:80]}]"
        print(line)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"{len(rows)} document(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


async def showing(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        view = await document_view(rt.pool, rt.store, args.document_id)
    if args.json:
        print(orjson.dumps(view).decode())
        return 0
    print(_human(view))
    return 0


async def set_meta(args: argparse.Namespace) -> int:
    metadata: dict[str, Any] = parse_metadata(args.json_object, what="--json-object") if args.json_object else {}
    metadata.update(parse_pairs(args.pairs, what="KEY=VALUE"))
    if not metadata and not args.replace:
        raise InvalidRequest("give metadata: KEY=VALUE pairs or --json-object (with --replace, none clears it)")
    async with open_runtime() as rt:
        change = await update_metadata(
            rt.store, args.document_id, metadata, "replace" if args.replace else "merge", actor="cli"
        )
    if args.json:
        print(orjson.dumps(change.to_json()).decode())
    else:
        what = "recorded" if change.changed else "unchanged (it had that metadata already)"
        print(f"metadata of {change.document_id} {what}: {orjson.dumps(change.metadata).decode()}")
    return 0


def _human(v: dict[str, Any]) -> str:
    lines = [
        f"{v['filename']}  ({v['document_id']})",
        f"  status      {v['status']}" + (f" (stage {v['current_stage']})" if v.get("current_stage") else ""),
        f"  content     {v.get('media_type')}, {v.get('size')} bytes, sha256 {v.get('sha256')}",
        f"  collection  {v.get('collection', 'default')}",
        f"  metadata    {orjson.dumps(v.get('metadata') or {}).decode()}",
    ]
    if v.get("page_count") is not None:
        lines.append(f"  pages       {v['page_count']}")
    if v.get("chunk_count") is not None:
        lines.append(f"  chunks      {v['chunk_count']}, embedded with {v.get('embedding_model') or '-'}")
    if v.get("last_error"):
        lines.append(f"  error       {v.get('error_class')}: {v['last_error']}")
    lines.append(f"  cost        ${v['costs']['total_usd']:.6f}")
    lines.append("  stages")
    for run in v["stages"]:
        took = f" in {run['duration_s']:.1f} s" if run.get("duration_s") is not None else ""
        error = f" — {run['error']['class']}: {run['error']['message'][:100]}" if run.get("error") else ""
        lines.append(f"    {run['stage']:<8} {run['status']}{took}{error}")
    return "\n".join(lines)
