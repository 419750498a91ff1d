"""``chronos serve [--host H] [--port P] [--with-workers N]``: the HTTP API and dashboard (app/server.py).

With ``--with-workers N`` the same process also runs N stage-worker slots (plus the dispatcher and
the projections), so one command serves a complete local system. Without it the projections still
run here (``--no-projections`` turns them off) and stage work waits for ``chronos worker``.
When ``CHRONOS_API_TOKENS`` is unset a random token is made for this run and printed, with a
dashboard link that carries it (``/#token=…``); without any token writes would all be refused.
"""

from __future__ import annotations

import argparse
import functools

from app.config import Settings
from app.errors import InvalidRequest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="HTTP API and dashboard (uvicorn); --with-workers N runs stage workers too")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--with-workers", type=int, default=0, metavar="N", help="run N stage-worker slots in-process")
    p.add_argument("--no-projections", action="store_true", help="without workers: don't run the projections here")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.server import ServeOptions, serve

    if args.with_workers < 0:
        raise InvalidRequest("--with-workers must be 0 or more")
    options = ServeOptions(
        host=args.host, port=args.port, worker_slots=args.with_workers, run_projections=not args.no_projections,
        log_level=args.log_level,
    )  # fmt: skip
    return serve(Settings.from_env(), options, functools.partial(print, flush=True))
