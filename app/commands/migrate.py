"""``chronos migrate``: apply the SQL migrations in ``sql/``."""

from __future__ import annotations

import argparse

import asyncpg

from app.config import Settings
from app.db import resolve_dsn
from events.migrations import migrate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (also done on start-up)")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    dsn = await resolve_dsn(Settings.from_env())
    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0
