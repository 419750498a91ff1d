"""The resources a command, worker or the API needs, opened and closed in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from app.config import Settings
from app.db import open_pool
from events.blobs import PgBlobStore
from events.store import EventStore


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    store: EventStore
    blobs: PgBlobStore


@asynccontextmanager
async def open_runtime(settings: Settings | None = None, *, max_size: int = 10) -> AsyncIterator[Runtime]:
    """Resolve the database (starting the embedded one if needed), migrate, open the pool."""
    settings = settings or Settings.from_env()
    dsn, pool = await open_pool(settings, max_size=max_size)
    store = EventStore(pool)
    try:
        yield Runtime(settings, dsn, pool, store, PgBlobStore(pool))
    finally:
        await store.notifier.flush()
        await pool.close()
