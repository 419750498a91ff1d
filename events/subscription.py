"""Durable, named subscriptions to the event log: gap-free, exactly-once, woken by NOTIFY.

Why (tx_id, position) and not position
--------------------------------------
Positions come from a sequence and are handed out before commit, so transactions commit out of
position order: "read where position > checkpoint" silently skips an event whose transaction
commits after a later position was already read. Serialising appends (one lock held through
commit) fixes that but halves append throughput, because commits can no longer share a WAL flush.

Instead every event row records the transaction that wrote it (``tx_id``, ``pg_current_xact_id()``)
and a subscriber reads

    WHERE (tx_id, position) > checkpoint AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY tx_id, position

``pg_snapshot_xmin`` is the oldest transaction still in progress. Every row below it was written by
a transaction that has finished, so the rows returned are final. Any row that becomes visible
later was written by a transaction whose id is at least that xmin -- greater than every tx_id
already delivered -- so it sorts after the checkpoint and is never skipped.
(Proved by tests/test_subscription.py::test_out_of_order_commit_is_not_skipped.)

Costs of the choice, written down: delivery order is (transaction, position), not position --
events of one transaction stay together and in order; a long-running *writing* transaction
anywhere in the database holds delivery back until it ends, so writers keep transactions short
(the blob store commits per chunk). Per-stream order is kept as long as an append is the first
write of its transaction, which is how the store and the workers append.

Exactly once
------------
The handler receives the connection of the transaction that also moves the checkpoint; a
projection writes its rows on it, so rows and checkpoint commit together. The checkpoint row is
locked (FOR UPDATE) for the batch, so two processes running the same subscription never apply a
batch twice; they take turns.

NOTIFY is a wake-up only: after every (re)connect the subscriber re-reads from its checkpoint, and
it polls every ``poll_interval`` seconds in case a notification was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from events.notifier import CHANNEL
from events.sqlfiles import query
from events.store import EventStore
from events.types import Cursor, DbConn, RecordedEvent

logger = logging.getLogger(__name__)

Handler = Callable[[DbConn, list[RecordedEvent]], Awaitable[None]]

_PENDING = "SELECT EXISTS (SELECT 1 FROM events WHERE (tx_id, position) > ($1::text::xid8, $2::bigint))"


class Subscription:
    """Feeds every event, once, in (tx_id, position) order, to ``handler`` in batches."""

    def __init__(
        self,
        store: EventStore,
        name: str,
        handler: Handler,
        *,
        dsn: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        reconnect_delay: float = 0.2,
    ) -> None:
        self.store = store
        self.name = name
        self.handler = handler
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.reconnect_delay = reconnect_delay
        self.listening = asyncio.Event()
        self.reconnects = 0
        self.last_error: str | None = None  # the handler error that stalls run(), if any
        self._wake = asyncio.Event()

    async def checkpoint(self) -> Cursor:
        async with self.store.pool.acquire() as conn:
            await conn.execute(query("events", "checkpoint_ensure"), self.name)
            row = await conn.fetchrow(query("events", "checkpoint_get"), self.name)
        assert row is not None
        return Cursor(row["tx_id"], row["position"])

    async def reset(self) -> None:
        """Start again from the beginning of the log (used by replay)."""
        async with self.store.pool.acquire() as conn:
            await conn.execute(query("events", "checkpoint_ensure"), self.name)
            await conn.execute(query("events", "checkpoint_reset"), self.name)

    async def process_batch(self) -> int:
        """Handle one batch in one transaction with its checkpoint; returns how many events."""
        async with self.store.pool.acquire() as conn:
            await conn.execute(query("events", "checkpoint_ensure"), self.name)
            async with conn.transaction():
                row = await conn.fetchrow(query("events", "checkpoint_lock"), self.name)
                assert row is not None
                cursor = Cursor(row["tx_id"], row["position"])
                events = await self.store.read_safe(cursor, self.batch_size, conn=conn)
                if not events:
                    return 0
                await self.handler(conn, events)
                last = events[-1]
                await conn.execute(
                    query("events", "checkpoint_set"), self.name, str(last.tx_id), last.position
                )
        return len(events)

    async def catch_up(self) -> int:
        """Handle batches until no safe event is left; returns how many were handled."""
        total = 0
        while True:
            n = await self.process_batch()
            total += n
            if n < self.batch_size:
                return total

    async def has_pending(self) -> bool:
        """Are there committed events after the checkpoint still held back by an open transaction?"""
        cursor = await self.checkpoint()
        return bool(await self.store.pool.fetchval(_PENDING, str(cursor.tx_id), cursor.position))

    async def run(self, stop: asyncio.Event) -> None:
        """Listen, catch up, wait for a notification or the poll interval; until ``stop`` is set."""
        listener = asyncio.create_task(self._listen(stop), name=f"listen-{self.name}")
        try:
            failures = 0
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.catch_up()
                    failures = 0
                    # Events held back by an open transaction: look again soon rather than after a
                    # full poll interval (that transaction may not notify when it commits).
                    timeout = 0.05 if await self.has_pending() else self.poll_interval
                except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                    failures += 1
                    timeout = min(self.poll_interval * 2**failures, 30.0)
                    logger.warning(
                        "subscription %s could not catch up; retrying in %.1fs",
                        self.name,
                        timeout,
                        extra={"action": "catch_up", "subscription": self.name, "error": str(exc)},
                    )
                except Exception as exc:
                    # A handler bug or an event it cannot take: the batch rolled back with the
                    # checkpoint, so nothing is half-applied. Stay alive and stalled at that event
                    # (skipping it would make the projection silently wrong; `chronos check` shows
                    # the projection behind the log) and try again with backoff, after a fix or a
                    # repaired blob store.
                    failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    timeout = min(self.poll_interval * 2**failures, 60.0)
                    logger.error(
                        "subscription %s is stalled by its handler: %s; retrying in %.1fs",
                        self.name,
                        self.last_error,
                        timeout,
                        exc_info=True,
                        extra={"action": "catch_up", "subscription": self.name, "error": self.last_error},
                    )
                await _wait_any(self._wake, stop, timeout)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, stop: asyncio.Event) -> None:
        """Keep a LISTEN connection open; after every (re)connect, wake the catch-up loop."""
        first = True
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, server_settings={"application_name": f"listen:{self.name}"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda *_args: self._wake.set())
                if not first:
                    self.reconnects += 1
                first = False
                self.listening.set()
                self._wake.set()  # notifications sent while disconnected are lost: re-read now
                while not (lost.is_set() or stop.is_set()):
                    await _wait_any(lost, stop, self.poll_interval * 5)
                    if not (lost.is_set() or stop.is_set()):
                        await conn.execute("SELECT 1")  # notice a dead connection early
            except (TimeoutError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                logger.info("listener for %s lost its connection: %s", self.name, exc)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            if not stop.is_set():
                await _wait_any(stop, stop, self.reconnect_delay)


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    """Return when either event is set or the timeout passes."""
    waiters = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
