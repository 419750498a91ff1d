"""The resources a command, worker or the API needs, opened and closed in one place.

Besides the pool, the store and the blob store a runtime owns the process's wake-up hub: one
LISTEN connection (``chronos_events``, ``chronos_jobs``) shared by every subscription, the job
runner and the API's live streams. It connects when the first of them starts waiting
(``async with rt.hub.running()``), so a command that never waits opens none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from app.config import Settings
from app.db import open_pool
from app.pipeline.jobs import JOBS_CHANNEL
from events.blobs import PgBlobStore
from events.hub import Hub
from events.notifier import CHANNEL
from events.store import EventStore


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    store: EventStore
    blobs: PgBlobStore
    hub: Hub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = Hub(self.dsn, channels=(CHANNEL, JOBS_CHANNEL))

    async def close(self) -> None:
        """Close the hub, send the last wake-up, close the pool -- in that order."""
        await self.hub.close()
        await self.store.notifier.close()
        await self.pool.close()


@asynccontextmanager
async def open_runtime(settings: Settings | None = None, *, max_size: int = 10) -> AsyncIterator[Runtime]:
    """Resolve the database (starting the embedded one if needed), migrate, open the pool."""
    settings = settings or Settings.from_env()
    dsn, pool = await open_pool(settings, max_size=max_size)
    store = EventStore(pool)
    rt = Runtime(settings, dsn, pool, store, PgBlobStore(pool))
    try:
        yield rt
    finally:
        await rt.close()
