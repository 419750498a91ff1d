"""``chronos serve [--host H] [--port P] [--with-workers N]``: the HTTP API and dashboard (uvicorn).

With ``--with-workers N`` the same process also runs N stage-worker slots (plus the dispatcher and
the projections), so one command serves a complete local system. Without it the projections still
run here (``--no-projections`` turns them off) and stage work waits for ``chronos worker``.
When ``CHRONOS_API_TOKENS`` is unset a random token is made for this run and printed, with a
dashboard link that carries it (``/#token=…``); without any token writes would all be refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import socket

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
    import uvicorn

    from app.api import create_app
    from app.api.server import ChronosServer

    if args.with_workers < 0:
        raise InvalidRequest("--with-workers must be 0 or more")
    settings = Settings.from_env()
    generated = None
    if not settings.api_tokens:
        generated = secrets.token_urlsafe(24)
        settings = dataclasses.replace(settings, api_tokens=(generated,))
    app = create_app(settings, worker_slots=args.with_workers, run_projections=not args.no_projections)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        server_header=False,
    )
    server = ChronosServer(config)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/"
    print(f"chronos serve: listening on {url} (worker slots: {args.with_workers})", flush=True)
    if generated:
        print(f"chronos serve: CHRONOS_API_TOKENS is unset; this run's token is {generated}", flush=True)
        print(f"chronos serve: dashboard {url}#token={generated}", flush=True)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
