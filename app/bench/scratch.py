"""A throw-away database on the configured server, migrated, for benchmarks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.config import Settings
from app.db import resolve_dsn, throwaway_database
from events.migrations import migrate


@asynccontextmanager
async def scratch_database(prefix: str = "chronos_bench") -> AsyncIterator[str]:
    """Create ``<prefix>_<pid>``, migrate it, yield its DSN, drop it afterwards."""
    base = await resolve_dsn(Settings.from_env())
    async with throwaway_database(base, f"{prefix}_{os.getpid()}", prepare=migrate) as dsn:
        yield dsn
