"""Run the projectors: continuously (``run_projections``) or once up to the head (``catch_up_all``).

Each projector is an ``events.Subscription`` named ``projection:<name>``; its handler writes the
projection's rows on the connection whose transaction also moves the checkpoint, so every event
is applied exactly once. Several processes may run the same projectors: the checkpoint row lock
makes them take turns, never apply a batch twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import asyncpg

from events.blobs import BlobStore, PgBlobStore
from events.store import EventStore
from events.subscription import Subscription
from projections.base import Projector
from projections.cost_ledger import CostLedgerProjector
from projections.documents import DocumentsProjector
from projections.embedding_cache import EmbeddingCacheProjector
from projections.index import IndexProjector
from projections.tokens import TokensProjector

logger = logging.getLogger(__name__)
BATCH_SIZE = 500


class HasPool(Protocol):
    pool: asyncpg.Pool
    store: EventStore


def all_projectors(blobs: BlobStore, *, bulk: bool = False) -> list[Projector]:
    """Every projector, in a fixed order. ``bulk``: replay mode (HNSW indexes built after loading)."""
    return [
        DocumentsProjector(),
        IndexProjector(blobs, defer_indexes=bulk),
        CostLedgerProjector(),
        EmbeddingCacheProjector(blobs),
        TokensProjector(),
    ]


PROJECTOR_CLASSES: tuple[type[Projector], ...] = (
    DocumentsProjector, IndexProjector, CostLedgerProjector, EmbeddingCacheProjector, TokensProjector,
)  # fmt: skip


def projector_names() -> list[str]:
    return [p.name for p in PROJECTOR_CLASSES]


def subscriptions(
    runtime_or_pool: HasPool | asyncpg.Pool, dsn: str, *, poll_interval: float = 1.0
) -> list[Subscription]:
    if isinstance(runtime_or_pool, asyncpg.Pool):
        pool, store = runtime_or_pool, EventStore(runtime_or_pool)
    else:
        pool, store = runtime_or_pool.pool, runtime_or_pool.store
    blobs = PgBlobStore(pool)
    return [
        Subscription(store, p.subscription, p.apply, dsn=dsn, batch_size=BATCH_SIZE, poll_interval=poll_interval)
        for p in all_projectors(blobs)
    ]


async def catch_up_all(pool: asyncpg.Pool, dsn: str) -> int:
    """Bring every projection up to the committed head once; returns the events handled in total
    (summed over projectors)."""
    counts = await asyncio.gather(*(s.catch_up() for s in subscriptions(pool, dsn)))
    return sum(counts)


async def run_projections(runtime_or_pool: HasPool | asyncpg.Pool, dsn: str, stop: asyncio.Event) -> None:
    """Keep every projection up to date until ``stop`` is set (woken by NOTIFY, polling as fallback)."""
    subs = subscriptions(runtime_or_pool, dsn)
    logger.info("projections running", extra={"action": "projections", "subscriptions": [s.name for s in subs]})
    await asyncio.gather(*(s.run(stop) for s in subs))
