"""``chronos reprocess --stage convert|chunk|embed (--document ID… | --all | --failed | --where SQL)``.

Appends ConversionRequested / ChunkingRequested / EmbeddingRequested for each selected document;
the stage workers act on them. ``--where`` is a predicate over the documents view, run as a role
that can read nothing else (see app/services/selection.py). For paid stages a cost quote comes first (outputs that
can be reused cost nothing: chunks whose text + model are in the embedding cache) and the command
asks before appending (``--yes`` skips); it refuses when the quote would cross the monthly budget,
unless ``--over-budget``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import asyncpg
import orjson

from app import costs, domain
from app.commands.costs import month_to_date
from app.config import Settings
from app.embedders.pricing import quote_embedding
from app.runtime import Runtime, open_runtime
from app.services.selection import Selection, select_documents
from events.store import EventStore
from events.types import NewEvent


def selection(args: argparse.Namespace) -> Selection:
    return Selection(
        document_ids=tuple(args.document or ()), all=bool(args.all), failed=bool(args.failed), where=args.where
    )


async def quote(pool: asyncpg.Pool, stage: str, ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Estimated USD of the request: OpenAI tokens not in the cache, or Modal GPU seconds per page."""
    if stage == "embed" and args.model:
        return await quote_embedding(pool, ids, args.model, Settings.from_env(),
                                     batch_api=bool(getattr(args, "batch_api", False)))  # fmt: skip
    if stage == "convert" and args.backend == "modal":
        row = await pool.fetchrow(
            "SELECT coalesce(sum(l.quantity) / nullif(sum(d.page_count), 0), 2.0) AS s_per_page "
            "FROM cost_ledger l JOIN documents d USING (document_id) WHERE l.resource = 'gpu_seconds'"
        )
        pages = await pool.fetchval(
            "SELECT coalesce(sum(page_count), 0) FROM documents WHERE document_id = ANY($1::uuid[])", ids
        )
        seconds = float(row["s_per_page"] if row else 2.0) * int(pages)
        return {"resource": "gpu_seconds", "quantity": seconds, "usd": seconds * costs.price("modal_gpu_second_a10g")}
    return {"resource": None, "quantity": 0, "usd": 0.0}


async def request(
    store: EventStore, stage: str, ids: list[str], args: argparse.Namespace, actor: str = "cli"
) -> int:
    kind = {
        "convert": domain.CONVERSION_REQUESTED,
        "chunk": domain.CHUNKING_REQUESTED,
        "embed": domain.EMBEDDING_REQUESTED,
    }
    params: dict[str, Any] = {"reason": args.reason}
    if stage == "convert":
        params["backend"] = args.backend or "auto"
    elif stage == "chunk":
        params.update(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    else:
        if not args.model:
            raise ValueError(
                "--stage embed needs --model (e.g. local:all-MiniLM-L6-v2 or openai:text-embedding-3-small)"
            )
        params["model"] = args.model
        if getattr(args, "all", False):
            # A model switch: the embed stage also embeds documents that arrive later with this model
            # (see app/pipeline/stages.switch_targets), so the new model comes to cover every document.
            params["scope"] = "all"
    for doc in ids:
        data = {"document_id": doc, "request_id": str(uuid.uuid4()), **params}
        await store.append(domain.stream_for(doc), [NewEvent(kind[stage], data, {"actor": actor})])
    return len(ids)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reprocess", help="run a stage again with new settings (appends request events)")
    p.add_argument("--stage", required=True, choices=domain.STAGES)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--document", action="append", metavar="ID")
    which.add_argument("--all", action="store_true")
    which.add_argument("--failed", action="store_true")
    which.add_argument("--where", metavar="SQL", help="predicate over the documents view, run read-only")
    p.add_argument("--backend", choices=("modal", "local", "auto"))
    p.add_argument("--chunk-size", type=int)
    p.add_argument("--chunk-overlap", type=int)
    p.add_argument("--model")
    p.add_argument("--reason", default="reprocess")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation of the cost quote")
    p.add_argument("--over-budget", action="store_true", help="proceed even past the monthly budget")
    p.add_argument("--batch-api", action="store_true",
                   help="--stage embed with an OpenAI model: OpenAI's Batch API (half price, within 24 h); "
                        "results are recorded by chronos batches poll")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def _submit_batches(rt: Runtime, ids: list[str], args: argparse.Namespace, q: dict[str, Any]) -> int:
    from app.embedders.batch_jobs import submit_embedding_batches

    report = await submit_embedding_batches(rt, ids, args.model, scope="all" if args.all else None,
                                            reason=args.reason, actor="cli")  # fmt: skip
    batches = [{"batch_id": b["batch_id"], "openai_batch_id": b["openai_batch_id"], "documents": len(b["documents"]),
                "inputs": b["inputs"]} for b in report.batches]  # fmt: skip
    plan = report.plan
    if args.json:
        print(orjson.dumps({"batches": batches, "quote": q, "embedded_now": plan.nothing_to_send,
                            "waiting_for_chunks": plan.no_chunks, "refused": plan.refused}).decode())  # fmt: skip
    else:
        for b in batches:
            print(f"submitted batch {b['batch_id']} ({b['openai_batch_id']}): {b['documents']} document(s), "
                  f"{b['inputs']} texts")
        if plan.nothing_to_send or plan.no_chunks:
            print(f"{len(plan.nothing_to_send) + len(plan.no_chunks)} document(s) need no batch (cached, or not "
                  "chunked yet): requested from the embed stage")  # fmt: skip
        for doc, why in plan.refused.items():
            print(f"not submitted {doc}: {why}", file=sys.stderr)
        if batches:
            print("results are recorded by: chronos batches poll --wait")
    return 1 if plan.refused else 0


async def main(args: argparse.Namespace) -> int:
    if getattr(args, "batch_api", False) and args.stage != "embed":
        raise ValueError("--batch-api is for --stage embed (OpenAI's Batch API)")
    async with open_runtime() as rt:
        ids = await select_documents(rt.pool, selection(args))
        q = await quote(rt.pool, args.stage, ids, args)
        budget = await month_to_date(rt.pool)
        if not args.json:
            print(f"{len(ids)} document(s); quote: ${q['usd']:.4f} ({q['quantity']} {q['resource'] or 'free'})")
        if q["usd"] > 0 and budget["spent_usd"] + q["usd"] > budget["budget_usd"] and not args.over_budget:
            print(
                f"paused: ${budget['spent_usd']:.2f} spent + ${q['usd']:.2f} quoted would cross the "
                f"${budget['budget_usd']:.2f} monthly budget; pass --over-budget to proceed",
                file=sys.stderr,
            )
            return 2
        if q["usd"] > 0 and not args.yes and (await asyncio.to_thread(input, "proceed? [y/N] ")).strip().lower() != "y":
            print("nothing requested")
            return 1
        if args.batch_api:
            return await _submit_batches(rt, ids, args, q)
        n = await request(rt.store, args.stage, ids, args)
        if args.all and args.stage == "embed":
            # Documents that appeared between the selection and the requests: ask for them too (later
            # ones are embedded with the new model by the embed stage itself).
            seen = set(ids)
            more = [d for d in await select_documents(rt.pool, selection(args)) if d not in seen]
            if more:
                n += await request(rt.store, args.stage, more, args)
                ids += more
    if args.json:
        print(orjson.dumps({"requested": n, "documents": ids, "quote": q}).decode())
    else:
        print(f"requested {args.stage} for {n} document(s)")
    return 0
