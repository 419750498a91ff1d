"""``chronos migrate``: apply the SQL migrations in ``sql/``."""

from __future__ import annotations

import argparse

from app.config import Settings
from app.db import migrate_database, resolve_dsn


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (also done on start-up)")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    dsn = await resolve_dsn(Settings.from_env())
    applied = await migrate_database(dsn)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0
