"""``chronos replay [--projection NAME | --all]``: rebuild projections from the log alone."""

from __future__ import annotations

import argparse

import orjson

from app.runtime import open_runtime
from projections.replay import replay
from projections.runner import projector_names


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="rebuild projections from the event log and blob store (no model calls)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--projection", action="append", choices=projector_names(), help="one projection (repeatable)")
    which.add_argument("--all", action="store_true", help="every projection (the default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        stats = await replay(rt.pool, rt.dsn, args.projection, progress=not args.json)
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
