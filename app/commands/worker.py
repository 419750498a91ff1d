"""``chronos worker``: run stage workers (and the dispatcher and projections) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from app.errors import InvalidRequest
from app.pipeline.backend import backend_services
from app.pipeline.worker import Worker
from app.runtime import open_runtime
from app.supervisor import Supervisor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="process queued stage work until stopped (SIGTERM/Ctrl-C)")
    p.add_argument("--stages", default="convert,chunk,embed", help="comma-separated stages to work on")
    p.add_argument("--concurrency", type=int, default=2, help="jobs in flight at once")
    p.add_argument("--lease", type=float, default=120.0, help="seconds a claimed job stays ours without a heartbeat")
    p.add_argument("--no-projections", action="store_true", help="don't run the projections in this process")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = set(stages) - {"convert", "chunk", "embed"}
    if unknown:
        raise InvalidRequest(f"unknown stage(s): {', '.join(sorted(unknown))}; choose from convert, chunk, embed")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(max_size=args.concurrency * 3 + 6) as rt:
        worker = Worker(rt, stages=stages, concurrency=args.concurrency, lease_s=args.lease)
        supervisor = Supervisor(backend_services(rt, worker, projections=not args.no_projections))
        print(f"{worker.owner}: working on {', '.join(stages)} (Ctrl-C or SIGTERM to stop)", flush=True)
        await supervisor.run(stop)
        print(f"{worker.owner}: stopped after {worker.processed} jobs", flush=True)
    return 0
