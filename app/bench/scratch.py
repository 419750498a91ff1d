"""A throw-away database on the configured server, migrated, for benchmarks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from app.config import Settings
from app.db import resolve_dsn, with_database
from events.migrations import migrate


@asynccontextmanager
async def scratch_database(prefix: str = "chronos_bench") -> AsyncIterator[str]:
    """Create ``<prefix>_<pid>``, migrate it, yield its DSN, drop it afterwards."""
    base = await resolve_dsn(Settings.from_env())
    name = f"{prefix}_{os.getpid()}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(base, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
