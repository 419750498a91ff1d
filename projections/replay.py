"""Rebuild projections from the log and the blob store alone, into shadow tables, then swap them
in atomically.

1. Shadow tables ``chronos_replay.<table>`` are created ``LIKE`` the live ones (same columns,
   constraints and index names; HNSW indexes are left out and built once after loading, with
   CREATE INDEX CONCURRENTLY outside a transaction: a plain build holds a transaction id, and with
   it every live subscriber on the server, for as long as it runs).
2. A subscription ``replay:<name>`` feeds the projector with ``search_path = chronos_replay,
   public``, so the same queries write the shadow tables. Each batch commits on its own (short
   write transactions: a long one would hold back every live subscriber).
3. Swap, in one transaction: lock the live projector's checkpoint (the live projector waits),
   apply what was appended meanwhile, move the live tables out and the shadow tables in
   (``ALTER TABLE ... SET SCHEMA``), re-apply the analyst views and grants, drop the old tables and
   give the live checkpoint the replay's. Readers see the old tables or the new, never a half-built one.

A crashed replay leaves only shadow tables and a ``replay:`` checkpoint; the next run drops both
and starts again. No model, Modal or OpenAI call is made: vectors come from the blobs named in
the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg
from tqdm import tqdm

from events.blobs import PgBlobStore
from events.connection import session_search_path, set_local_search_path
from events.errors import InvalidRequest
from events.migrations import discover
from events.sqlfiles import query
from events.store import EventStore
from events.subscription import Subscription
from events.types import Cursor, RecordedEvent
from projections.base import Conn, Projector
from projections.runner import all_projectors

logger = logging.getLogger(__name__)
SHADOW = "chronos_replay"
RETIRED = "chronos_retired"
BATCH_SIZE = 2000


@dataclass
class ReplayStats:
    projections: list[str]
    events: int  # events read from the log per projection, summed
    log_events: int
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # "<projection>:load|index|swap" -> seconds

    @property
    def events_per_s(self) -> float:
        return self.log_events * len(self.projections) / self.seconds if self.seconds else 0.0


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _prepare_shadow(conn: Conn, projector: Projector) -> None:
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SHADOW}")
    for table in projector.tables:
        await conn.execute(f"DROP TABLE IF EXISTS {SHADOW}.{_ident(table)}")
        await conn.execute(f"CREATE TABLE {SHADOW}.{_ident(table)} (LIKE public.{_ident(table)} INCLUDING ALL)")
    for r in await conn.fetch(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am a ON a.oid = i.relam"
        " WHERE n.nspname = $1 AND a.amname = 'hnsw'",
        SHADOW,
    ):
        await conn.execute(f"DROP INDEX {SHADOW}.{_ident(r['relname'])}")


async def _in_shadow(conn: Conn) -> None:
    await set_local_search_path(conn, SHADOW, "public")


async def reapply_views(conn: Conn) -> None:
    """Re-create the analyst views and grants so they point at the swapped-in tables."""
    await set_local_search_path(conn, "public")
    for m in discover():
        if m.kind == "view":
            await conn.execute(m.text)


async def replay(
    pool: asyncpg.Pool,
    dsn: str,
    names: list[str] | None = None,
    *,
    progress: bool = True,
    build_memory_cap_mb: int | None = None,
) -> ReplayStats:
    """Rebuild the named projections (all when None) and swap them in; returns throughput figures."""
    store = EventStore(pool)
    blobs = PgBlobStore(pool)
    projectors = [
        p
        for p in all_projectors(blobs, bulk=True, build_memory_cap_mb=build_memory_cap_mb)
        if names is None or p.name in names
    ]
    unknown = set(names or ()) - {p.name for p in projectors}
    if unknown:
        known = [p.name for p in all_projectors(blobs)]
        raise InvalidRequest(f"unknown projection(s) {sorted(unknown)}; known: {known}")
    log_events = int(await pool.fetchval("SELECT count(*) FROM events"))
    start = time.perf_counter()
    total = 0
    phases: dict[str, float] = {}
    bar = tqdm(total=log_events * len(projectors), unit="ev", desc="replay", disable=not progress)
    try:
        for projector in projectors:
            total += await _replay_one(pool, dsn, store, projector, bar, phases)
    finally:
        bar.close()
    return ReplayStats([p.name for p in projectors], total, log_events, time.perf_counter() - start, phases)


async def _replay_one(
    pool: asyncpg.Pool, dsn: str, store: EventStore, projector: Projector, bar: tqdm, phases: dict[str, float]
) -> int:
    bar.set_postfix_str(projector.name)
    t0 = time.perf_counter()
    async with pool.acquire() as conn:
        await _prepare_shadow(conn, projector)

    async def handler(conn: Conn, events: list[RecordedEvent]) -> None:
        await _in_shadow(conn)
        await projector.apply(conn, events)
        bar.update(len(events))

    name = f"replay:{projector.name}"
    sub = Subscription(store, name, handler, batch_size=BATCH_SIZE)
    await sub.reset()
    count = await sub.catch_up()
    t1 = time.perf_counter()
    async with pool.acquire() as conn:
        # Outside a transaction: the HNSW indexes are built CONCURRENTLY, holding no transaction id
        # (a long one would hold back every live subscriber for the whole build).
        async with session_search_path(conn, SHADOW, "public"):
            await projector.finish_bulk_load(conn)
        t2 = time.perf_counter()
        count += await _swap_again_on_deadlock(conn, store, projector, name)
    phases[f"{projector.name}:load"] = t1 - t0
    phases[f"{projector.name}:index"] = t2 - t1
    phases[f"{projector.name}:swap"] = time.perf_counter() - t2
    return count


SWAP_ATTEMPTS = 5


async def _swap_again_on_deadlock(conn: Conn, store: EventStore, projector: Projector, replay_name: str) -> int:
    """The swap in a transaction of its own, run again when PostgreSQL breaks a deadlock (or a lock
    timeout) by failing it. The swap re-grants and re-enables row-level security on every projection
    table (``reapply_views``); an autovacuum that began analysing one of them waits for the swap's
    catalog row updates while the swap waits for that table's lock -- seen at the end of a 300k-chunk
    replay, which then failed after 13 minutes of work. The failed transaction rolled back and the
    shadow tables are untouched, so running the swap again is the whole remedy."""
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                return await _swap(conn, store, projector, replay_name)
        except (asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError) as exc:
            if attempt == SWAP_ATTEMPTS:
                raise
            logger.warning(
                "replay of %s: swap attempt %d failed (%s); trying again", projector.name, attempt, exc,
                extra={"action": "replay", "projection": projector.name},
            )  # fmt: skip
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def _swap(conn: Conn, store: EventStore, projector: Projector, replay_name: str) -> int:
    live = projector.subscription
    await conn.execute(query("events", "checkpoint_ensure"), live)
    await conn.fetchrow(query("events", "checkpoint_lock"), live)  # the live projector waits for us
    row = await conn.fetchrow(query("events", "checkpoint_lock"), replay_name)
    assert row is not None
    cursor = Cursor(row["tx_id"], row["position"])
    await _in_shadow(conn)
    count = 0
    while True:  # what was appended since the bulk load, in this transaction
        events = await store.read_safe(cursor, BATCH_SIZE, conn=conn)
        if not events:
            break
        await projector.apply(conn, events)
        count += len(events)
        cursor = events[-1].cursor
    await set_local_search_path(conn, "public")
    await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED} CASCADE")
    await conn.execute(f"CREATE SCHEMA {RETIRED}")
    for table in projector.tables:
        await conn.execute(f"ALTER TABLE public.{_ident(table)} SET SCHEMA {RETIRED}")
        await conn.execute(f"ALTER TABLE {SHADOW}.{_ident(table)} SET SCHEMA public")
    await reapply_views(conn)
    await conn.execute(f"DROP SCHEMA {RETIRED} CASCADE")
    await conn.execute(query("events", "checkpoint_set"), live, str(cursor.tx_id), cursor.position)
    await conn.execute("DELETE FROM subscriptions WHERE name = $1", replay_name)
    logger.info("replayed %s", projector.name, extra={"action": "replay", "projection": projector.name})
    return count
