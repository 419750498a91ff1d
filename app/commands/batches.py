"""``chronos batches list|poll``: OpenAI Batch API embedding jobs (``reprocess --stage embed --batch-api``).

``poll`` looks up every open batch and records the ones that have ended (app.embedders.batch_jobs);
``--wait`` keeps polling until none is open. The log holds each batch's id, so any process, after any
restart, picks up where the last one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import orjson

from app.catalogue import events as ev
from app.catalogue.codec import decode_payload, payload
from app.runtime import open_runtime
from events.sqlfiles import query

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("batches", help="OpenAI Batch API embedding jobs: list them, poll and record results")
    which = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = which.add_parser("list", help="batches, newest first, with their end")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_main)
    poll = which.add_parser("poll", help="look up open batches and record the ones that ended")
    poll.add_argument("--wait", action="store_true", help="keep polling until no batch is open")
    poll.add_argument("--interval", type=float, default=60.0, help="seconds between polls with --wait (default 60)")
    poll.add_argument("--json", action="store_true")
    poll.set_defaults(func=poll_main)


async def list_main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        rows = await rt.pool.fetch(query("embeddings", "embedding_batches"), args.limit)
    out = []
    for r in rows:
        s = decode_payload(ev.EmbeddingBatchSubmitted.TYPE, r["submitted_version"], r["submitted"])
        f = None
        if r["finished"] is not None:
            f = decode_payload(ev.EmbeddingBatchFinished.TYPE, r["finished_version"], r["finished"])
        assert isinstance(s, ev.EmbeddingBatchSubmitted)
        assert f is None or isinstance(f, ev.EmbeddingBatchFinished)
        out.append({"batch_id": s.batch_id, "openai_batch_id": s.openai_batch_id, "model": s.model,
                    "documents": len(s.documents), "inputs": s.inputs, "submitted_at": r["submitted_at"].isoformat(),
                    "status": f.status if f else "open", "amount_usd": f.amount_usd if f else None,
                    "incomplete_documents": f.incomplete_documents if f else {}})  # fmt: skip
    if args.json:
        print(orjson.dumps(out).decode())
        return 0
    if not out:
        print("no batches")
    for b in out:
        cost = f"${b['amount_usd']:.6f}" if b["amount_usd"] is not None else "-"
        print(f"{b['batch_id']}  {b['openai_batch_id']}  {b['status']:<9} {b['model']}  {b['documents']} document(s), "
              f"{b['inputs']} texts  {cost}")  # fmt: skip
        for doc, why in b["incomplete_documents"].items():
            print(f"    incomplete {doc}: {why}")
    return 0


async def poll_main(args: argparse.Namespace) -> int:
    from app.embedders.batch_jobs import poll_embedding_batches  # imports the OpenAI SDK (seconds)

    async with open_runtime() as rt:
        while True:
            states = await poll_embedding_batches(rt, actor="cli")
            for s in states:
                done = s.finished
                if args.json:
                    print(orjson.dumps({"batch_id": s.batch_id, "openai_batch_id": s.openai_batch_id,
                                        "status": s.status, "finished": payload(done) if done else None}).decode(),
                          flush=True)  # fmt: skip
                else:
                    extra = (f": {len(done.embedded_documents)} embedded, {len(done.incomplete_documents)} incomplete"
                             if done else "")  # fmt: skip
                    print(f"{s.batch_id} ({s.openai_batch_id}) {s.status}{extra}", flush=True)
            if not args.wait or all(s.finished for s in states):
                return 0
            await asyncio.sleep(args.interval)
