"""The projectors as subscriptions (``subscriptions``), and once up to the head (``catch_up_all``).

Each projector is an ``events.Subscription`` named ``projection:<name>``; its handler writes the
projection's rows on the connection whose transaction also moves the checkpoint, so every event
is applied exactly once. Its commit does not wait for the WAL flush: a crash of the server can undo
the last batches together with their checkpoints, which are then applied again. Several processes
may run the same projectors: the checkpoint row lock makes them take turns, never apply a batch
twice, and a process that finds it taken waits on its hub without holding a connection (see
events/subscription.py). Running them is the application's business: each subscription's ``run``
is a service of the process's supervisor.
"""

from __future__ import annotations

import asyncio

import asyncpg

from events.blobs import BlobStore, PgBlobStore
from events.hub import Hub
from events.store import EventStore
from events.subscription import Subscription
from projections.base import Projector
from projections.collections import CollectionsProjector
from projections.cost_ledger import CostLedgerProjector
from projections.documents import DocumentsProjector
from projections.embedding_cache import EmbeddingCacheProjector
from projections.index import IndexProjector
from projections.tokens import TokensProjector

BATCH_SIZE = 500


def all_projectors(blobs: BlobStore, *, bulk: bool = False, build_memory_cap_mb: int | None = None) -> list[Projector]:
    """Every projector, in a fixed order. ``bulk``: replay mode (HNSW indexes built after loading)."""
    return [
        DocumentsProjector(),
        IndexProjector(blobs, defer_indexes=bulk, build_memory_cap_mb=build_memory_cap_mb),
        CostLedgerProjector(),
        EmbeddingCacheProjector(blobs),
        TokensProjector(),
        CollectionsProjector(),
    ]


PROJECTOR_CLASSES: tuple[type[Projector], ...] = (
    DocumentsProjector, IndexProjector, CostLedgerProjector, EmbeddingCacheProjector, TokensProjector,
    CollectionsProjector,
)  # fmt: skip


def projector_names() -> list[str]:
    return [p.name for p in PROJECTOR_CLASSES]


def subscriptions(
    store: EventStore, blobs: BlobStore, *, hub: Hub | None = None, poll_interval: float = 1.0
) -> list[Subscription]:
    """One subscription per projector (``hub``: the process's wake-up hub, needed to ``run`` them)."""
    return [
        Subscription(
            store, p.subscription, p.apply, hub=hub, batch_size=BATCH_SIZE, poll_interval=poll_interval, durable=False
        )
        for p in all_projectors(blobs)
    ]


async def catch_up_to_head(pool: asyncpg.Pool, timeout: float | None = None) -> int:
    """Like ``catch_up_all``, and also wait for events held back by an open transaction: one that
    started before they committed, in *any* database of the server, since the safe horizon
    (``pg_snapshot_xmin``) is the cluster's. Returns the events handled; raises ``TimeoutError``
    when some are still held back after ``timeout`` seconds."""
    subs = subscriptions(EventStore(pool), PgBlobStore(pool))
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    total = 0
    pause = 0.01
    while True:
        total += sum(await asyncio.gather(*(s.catch_up() for s in subs)))
        held = await asyncio.gather(*(s.has_pending() for s in subs))
        pending = [s.name for s, waits in zip(subs, held, strict=True) if waits]
        if not pending:
            return total
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            raise TimeoutError(
                f"{', '.join(pending)} still wait for events an open transaction holds back after {timeout:.0f} s; "
                "see pg_stat_activity for the oldest backend_xid"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def catch_up_all(pool: asyncpg.Pool, dsn: str | None = None) -> int:
    """Bring every projection up to the committed head once; returns the events handled in total
    (summed over projectors). ``dsn`` is not used (catching up needs no LISTEN connection)."""
    counts = await asyncio.gather(*(s.catch_up() for s in subscriptions(EventStore(pool), PgBlobStore(pool))))
    return sum(counts)
