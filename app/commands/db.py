"""``chronos db start|stop|status|url``: explicit control of the embedded server."""

from __future__ import annotations

import argparse
import asyncio

import orjson

from app.config import Settings
from app.db import embedded_status, resolve_dsn, start_embedded, stop_embedded


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="embedded database: start, stop, status, url")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.action == "url":
        print(asyncio.run(resolve_dsn(settings)))
        return 0
    if settings.database_url and args.action in ("start", "stop"):
        print("DATABASE_URL is set: the embedded server is not used; nothing to do.")
        return 0
    if args.action == "start":
        start_embedded(settings.pgdata)
        print(f"embedded PostgreSQL running (data in {settings.pgdata.resolve()})")
        return 0
    if args.action == "stop":
        was = stop_embedded(settings.pgdata)
        print("stopped" if was else "not running")
        return 0
    status = embedded_status(settings.pgdata)
    info = {
        "database_url_set": bool(settings.database_url),
        "pgdata": str(status.pgdata),
        "initialised": status.initialised,
        "running": status.running,
        "pid": status.pid,
    }
    if args.json:
        print(orjson.dumps(info).decode())
    else:
        for key, value in info.items():
            print(f"{key:17} {value}")
    return 0
