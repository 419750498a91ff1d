"""``chronos history ID|KEY [--json]``: every revision of a document — where its content came from
(source, file, sha256), when each stage finished, why it failed, what it cost, and which revision
search answers from. KEY is the document's key (``directus:<file id>``, ``api:<external id>``,
``folder:<source>:<path>``). Analysts: the SQL view ``v_document_revisions``."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import orjson

from app.runtime import open_runtime
from app.services.documents import history

STAGES = ("convert", "chunk", "embed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="the revisions of a document (by id or key)")
    p.add_argument("document", metavar="ID|KEY", help="a document id or its key, e.g. directus:<file id>")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _at(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else "-"


async def run(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        body = await history(rt.store, args.document)
    if args.json:
        print(orjson.dumps(body).decode())
        return 0
    key = f" ({body['key']})" if body["key"] else ""
    serving = body["serving_revision"]
    print(f"document {body['document_id']}{key}: {body['status']}, "
          f"search answers from {'revision ' + str(serving) if serving else 'no revision'}")  # fmt: skip
    for r in body["revisions"]:
        mark = "*" if r["serving"] else " "
        done = [s for s in STAGES if s in r["stages"]]
        print(
            f"{mark} revision {r['revision']}  {_at(r['uploaded_at'])}  {r['filename']}  {r['size']} B  "
            f"sha256 {r['sha256'][:12]}  from {r['source']}{'/' + r['source_ref'] if r['source_ref'] else ''}"
        )
        print(f"    stages: {', '.join(done) or 'none yet'}   cost ${r['cost_usd']:.6f}"
              + (f"   deleted {_at(r['deleted_at'])}" if r["deleted_at"] else ""))  # fmt: skip
        if r["failure"]:
            f = r["failure"]
            print(f"    failed in {f['stage']}{' (final)' if f['final'] else ''}: {f['message']}")
    return 0
