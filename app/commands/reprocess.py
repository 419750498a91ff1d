"""``chronos reprocess --stage convert|chunk|embed (--document ID… | --all | --failed | --where SQL)``.

Parsing and printing only; the work is in app/services/reprocess.py (selection, quote, budget stop,
requests, OpenAI Batch API submission). ``--where`` is a predicate over the documents view, run as a role
that can read nothing else (app/services/selection.py). A paid request asks before appending (``--yes``
skips) and stops at the monthly budget unless ``--over-budget``. ``--batch-api`` (``--stage embed`` with
an OpenAI model) submits OpenAI Batch API jobs instead of asking the embed stage: half price, results
within 24 hours, recorded by ``chronos batches poll``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from app.catalogue.events import STAGES
from app.runtime import open_runtime
from app.services import reprocess
from app.services.budget import check_quote
from app.services.selection import Selection


def selection(args: argparse.Namespace) -> Selection:
    return Selection(
        document_ids=tuple(args.document or ()), all=bool(args.all), failed=bool(args.failed), where=args.where
    )


def stage_request(args: argparse.Namespace) -> reprocess.StageRequest:
    template = args.context_template
    if template is not None:
        template = template.replace("\\n", "\n")  # a shell's '{title}\n{headings}': the two-character \n
    return reprocess.StageRequest(
        stage=args.stage, reason=args.reason, backend=args.backend, chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap, context_template=template, model=args.model,
        switch=bool(args.all and args.stage == "embed"), batch_api=bool(getattr(args, "batch_api", False)),
    )  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reprocess", help="run a stage again with new settings (appends request events)")
    p.add_argument("--stage", required=True, choices=STAGES)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--document", action="append", metavar="ID")
    which.add_argument("--all", action="store_true")
    which.add_argument("--failed", action="store_true")
    which.add_argument("--where", metavar="SQL", help="predicate over the documents view (a role that reads only it)")
    p.add_argument("--backend", choices=reprocess.BACKENDS)
    p.add_argument("--chunk-size", type=int)
    p.add_argument("--chunk-overlap", type=int)
    p.add_argument("--context-template", metavar="TEMPLATE",
                   help="--stage chunk: what is embedded with each chunk, from {title}, {headings} and {table} "
                        "(default \"{title}\\n{headings}\\n{table}\"; \"\" embeds chunks bare); quoted first: "
                        "chunks whose embed input changes are embedded again; \\n is a line break")  # fmt: skip
    p.add_argument("--model")
    p.add_argument("--reason", default="reprocess")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation of the cost quote")
    p.add_argument("--over-budget", action="store_true", help="proceed even past the monthly budget")
    p.add_argument("--batch-api", action="store_true",
                   help="--stage embed with an OpenAI model: OpenAI's Batch API (half price, within 24 h); "
                        "results are recorded by chronos batches poll")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        chosen = selection(args)
        if args.stage == "chunk" and not args.json:  # the quote chunks every selected document first
            print("quoting: chunking the selected documents with the new settings…", file=sys.stderr, flush=True)
        plan = await reprocess.plan(rt.pool, rt.settings, chosen, stage_request(args))
        q = plan.quote
        if not args.json:
            print(f"{len(plan.document_ids)} document(s); quote: ${q.usd:.4f} ({q.quantity} {q.resource or 'free'})")
            _print_chunk_quote(q)
        await check_quote(rt.pool, rt.settings, q.usd, over_budget_ok=args.over_budget,
                          by_collection=plan.by_collection)  # fmt: skip
        if q.usd > 0 and not args.yes:
            answer = await asyncio.to_thread(input, "proceed? [y/N] ")
            if answer.strip().lower() != "y":
                print("nothing requested")
                return 1
        await reprocess.execute(rt.pool, rt.store, rt.settings, plan, actor="cli", over_budget_ok=args.over_budget,
                                selection=chosen, blobs=rt.blobs)  # fmt: skip
    if plan.batches is not None:
        return _print_batches(plan, args.json)
    if args.json:
        ids = plan.document_ids + plan.extra
        print(orjson.dumps({"requested": plan.requested, "documents": ids, "quote": q.to_json()}).decode())
    else:
        print(f"requested {args.stage} for {plan.requested} document(s)")
    return 0


def _print_chunk_quote(q: reprocess.Quote) -> None:
    """What a re-chunk will embed again, per model (the rest is in the embedding cache: free)."""
    for model, line in (q.details.get("models") or {}).items():
        paid = f", {line['tokens']} tokens ${line['usd']:.4f}" if "tokens" in line else ""
        print(f"  {model}: {line['embed_inputs']} chunk(s) to embed{paid}, {line['cached']} cached")
    if q.details.get("local_documents"):
        print(f"  {q.details['local_documents']} document(s) embedded by a local model: CPU time only, not quoted")
    if q.details.get("not_converted"):
        print(f"  {q.details['not_converted']} document(s) not converted yet: chunked and embedded when they are")
    for doc, why in (q.details.get("cannot_chunk") or {}).items():
        print(f"  cannot chunk {doc} (its request will fail with this reason): {why}", file=sys.stderr)


def _print_batches(plan: reprocess.Plan, as_json: bool) -> int:
    """What a Batch API request submitted; exit 1 when some documents could not be submitted."""
    assert plan.batches is not None
    submitted, planned = plan.batches.batches, plan.batches.plan
    batches: list[dict[str, Any]] = [
        {
            "batch_id": b.batch_id,
            "openai_batch_id": b.openai_batch_id,
            "documents": len(b.documents),
            "inputs": b.inputs,
        }
        for b in submitted
    ]
    if as_json:
        print(orjson.dumps({"batches": batches, "quote": plan.quote.to_json(), "embedded_now": planned.nothing_to_send,
                            "waiting_for_chunks": planned.no_chunks, "refused": planned.refused}).decode())  # fmt: skip
    else:
        for b in batches:
            print(
                f"submitted batch {b['batch_id']} ({b['openai_batch_id']}): {b['documents']} document(s), "
                f"{b['inputs']} texts"
            )
        if planned.nothing_to_send or planned.no_chunks:
            print(f"{len(planned.nothing_to_send) + len(planned.no_chunks)} document(s) need no batch (cached, or "
                  "not chunked yet): requested from the embed stage")  # fmt: skip
        for doc, why in planned.refused.items():
            print(f"not submitted {doc}: {why}", file=sys.stderr)
        if batches:
            print("results are recorded by: chronos batches poll --wait")
    return 1 if planned.refused else 0
