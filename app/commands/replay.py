"""``chronos replay [--projection NAME | --all] [--document ID]``: rebuild projections from the log alone."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import orjson

from app.runtime import open_runtime
from projections.replay import replay
from projections.replay_document import replay_documents
from projections.runner import projector_names


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="rebuild projections from the event log and blob store (no model calls)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--projection", action="append", choices=projector_names(), help="one projection (repeatable)")
    which.add_argument("--all", action="store_true", help="every projection (the default)")
    p.add_argument(
        "--document",
        action="append",
        metavar="ID",
        help="rebuild only this document's rows, in place (repeatable; combine with --projection)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    if args.document:
        return await _documents(args)
    async with open_runtime() as rt:
        stats = await replay(
            rt.pool,
            rt.dsn,
            args.projection,
            progress=not args.json,
            build_memory_cap_mb=rt.settings.index_build_memory_mb,
        )
    figures = {
        "projections": stats.projections,
        "log_events": stats.log_events,
        "seconds": round(stats.seconds, 3),
        "events_per_s": round(stats.events_per_s),
    }
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        print(
            f"replayed {', '.join(stats.projections)} from {stats.log_events} events in {stats.seconds:.2f}s "
            f"({stats.events_per_s:,.0f} events/s across projections)"
        )
    return 0


async def _documents(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    async with open_runtime() as rt:
        done = await replay_documents(rt.pool, args.document, args.projection)
    seconds = time.perf_counter() - started
    if args.json:
        print(orjson.dumps({"documents": args.document, "seconds": round(seconds, 3),
                            "projections": [asdict(d) for d in done]}).decode())  # fmt: skip
    else:
        for d in done:
            print(f"{d.projection:<16} {d.events:>6} events re-applied, {d.rows_deleted:>6} rows replaced")
        print(f"replayed {len(args.document)} document(s) in {seconds:.2f}s")
    return 0
