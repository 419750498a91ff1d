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

Exactly once, and nobody waits on a lock
----------------------------------------
The handler receives the connection of the transaction that also moves the checkpoint; a
projection writes its rows on it, so rows and checkpoint commit together. The batch's transaction
holds the checkpoint row (FOR UPDATE), so two processes running the same subscription never apply
a batch twice. The row is taken with SKIP LOCKED: a process that finds it held (another one is
applying a batch right now) gives its pool connection back at once and waits on the wake-up hub
and its poll interval instead of queueing on the lock. The holder reads what was appended meanwhile
when its batch is done (its own wake-up token was set), so the loser only takes over when the
holder stops or dies. (Proved by
tests/test_subscription.py::test_loser_holds_no_connection_while_another_process_applies.)

A wake-up costs no transaction when there is nothing to read
-----------------------------------------------------------
Every append notifies every subscription of every process, and one batch often takes the events
of several notifications. So a woken subscription first asks, in one read-only query and without
the row lock, whether anything is readable after the checkpoint it last saw (``probe``), and only
then opens the batch's transaction. (Measured by ``chronos bench pipeline``, docs/benchmarks.md.)

NOTIFY is a wake-up only: the subscriber re-reads from its checkpoint after every reconnect of the
process's hub (events/hub.py), and polls every ``poll_interval`` seconds in case a notification was
lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from events.hub import Hub, wait_any
from events.notifier import CHANNEL
from events.sqlfiles import query
from events.store import EventStore
from events.types import Cursor, DbConn, RecordedEvent

logger = logging.getLogger(__name__)

Handler = Callable[[DbConn, list[RecordedEvent]], Awaitable[None]]

_BUSY_RETRY_MAX = 0.5  # catch_up(): longest pause between tries while another process holds the checkpoint


class Subscription:
    """Feeds every event, once, in (tx_id, position) order, to ``handler`` in batches.

    ``catch_up()`` brings it to the committed head once; ``run(stop)`` keeps it there, woken by the
    process's ``hub`` (needed only by ``run``).

    ``durable=False``: a batch's transaction commits without waiting for its WAL to reach the disk
    (``synchronous_commit = off``), for handlers whose writes the log rebuilds (projections, the
    dispatcher's jobs). A crash of the server can lose the last such commits (at most ~3 ×
    ``wal_writer_delay``), each with its checkpoint, so the batch is applied again at the next start;
    any later durable commit (an append to the log) makes them durable too. Never for a handler that
    appends to the log or has effects outside the database."""

    def __init__(
        self,
        store: EventStore,
        name: str,
        handler: Handler,
        *,
        hub: Hub | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        durable: bool = True,
    ) -> None:
        self.store = store
        self.durable = durable
        self.name = name
        self.handler = handler
        self.hub = hub
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.last_error: str | None = None  # the handler error that stalls run(), if any
        self.busy = 0  # times the checkpoint was held by another process when this one looked
        self._created = False  # the checkpoint row is known to exist
        self._seen: Cursor | None = None  # the checkpoint as this process last read or wrote it
        self._seen_at = 0.0  # when (time.monotonic())

    async def checkpoint(self) -> Cursor:
        async with self.store.pool.acquire() as conn:
            row = await conn.fetchrow(query("events", "checkpoint_get"), self.name)
            if row is None:
                await conn.execute(query("events", "checkpoint_ensure"), self.name)
                row = await conn.fetchrow(query("events", "checkpoint_get"), self.name)
        assert row is not None
        return Cursor(row["tx_id"], row["position"])

    async def reset(self) -> None:
        """Start again from the beginning of the log (used by replay)."""
        async with self.store.pool.acquire() as conn:
            await conn.execute(query("events", "checkpoint_ensure"), self.name)
            await conn.execute(query("events", "checkpoint_reset"), self.name)

    async def process_batch(self) -> int | None:
        """Handle one batch in one transaction with its checkpoint; returns how many events, or
        None when another process holds the checkpoint (it is applying a batch) -- without waiting."""
        async with self.store.pool.acquire() as conn:
            if not self._created:
                # In a transaction of its own: a checkpoint row created inside a batch's transaction
                # would make every other process's INSERT wait for that batch to commit.
                await conn.execute(query("events", "checkpoint_ensure"), self.name)
                self._created = True
            async with conn.transaction():
                if not self.durable:
                    await conn.execute(query("events", "commit_without_flush"))
                row = await conn.fetchrow(query("events", "checkpoint_try_lock"), self.name)
                if row is None:
                    if await conn.fetchval(query("events", "checkpoint_exists"), self.name):
                        self.busy += 1
                    else:  # deleted meanwhile (replay drops its own): created again on the next try
                        self._created = False
                    return None
                cursor = Cursor(row["tx_id"], row["position"])
                events = await self.store.read_safe(cursor, self.batch_size, conn=conn)
                if not events:
                    self._see(cursor)
                    return 0
                await self.handler(conn, events)
                last = events[-1]
                await conn.execute(query("events", "checkpoint_set"), self.name, str(last.tx_id), last.position)
        self._see(Cursor(last.tx_id, last.position))
        return len(events)

    def _see(self, cursor: Cursor) -> None:
        self._seen, self._seen_at = cursor, time.monotonic()

    async def catch_up_once(self) -> int | None:
        """Handle batches until no safe event is left; None when another process held the
        checkpoint (it carries on from there)."""
        total = 0
        while True:
            n = await self.process_batch()
            if n is None:
                return None
            total += n
            if n < self.batch_size:
                return total

    async def catch_up(self) -> int:
        """Handle batches until no safe event is left, also when another process is applying a batch
        (tried again after a short pause; no connection is held meanwhile). Returns how many this
        process handled."""
        total = 0
        pause = 0.01
        while True:
            n = await self.catch_up_once()
            if n is not None:
                return total + n
            await asyncio.sleep(pause)
            pause = min(pause * 2, _BUSY_RETRY_MAX)

    async def has_pending(self) -> bool:
        """Are there committed events after the checkpoint still held back by an open transaction?"""
        self._see(await self.checkpoint())
        return (await self.probe())[1]

    async def probe(self) -> tuple[bool, bool]:
        """(ready, held back): are there events this subscription can read after the checkpoint it
        last saw, and committed ones still held back by an open transaction? One read-only round trip
        and no lock: a wake-up for events an earlier batch already took costs no transaction. The
        checkpoint it last saw may be behind one another process moved: then it reads a batch that
        turns out empty, and knows the checkpoint again."""
        if self._seen is None or time.monotonic() - self._seen_at > self.poll_interval:
            # Read again at least once per poll interval: a checkpoint set back (reset) is seen.
            self._see(await self.checkpoint())
        assert self._seen is not None
        row = await self.store.pool.fetchrow(
            query("events", "subscription_probe"), str(self._seen.tx_id), self._seen.position
        )
        assert row is not None
        return bool(row["ready"]), bool(row["committed"]) and not row["ready"]

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up, then wait for a wake-up from the hub or the poll interval; until ``stop`` is set."""
        hub = self.hub
        if hub is None:
            raise ValueError(f"subscription {self.name} needs the process's wake-up hub to run (hub=rt.hub)")
        async with hub.running():
            failures = 0
            while not stop.is_set():
                token = hub.wakeup(CHANNEL)
                woken: asyncio.Event | None = token
                try:
                    ready, held_back = await self.probe()
                    if not ready:
                        # Nothing to read (a wake-up for events a batch already took, or a poll):
                        # no transaction. Events held back by an open transaction: look again soon
                        # rather than after a full poll interval (it may not notify when it commits).
                        failures = 0
                        self.last_error = None
                        await wait_any(0.05 if held_back else self.poll_interval, stop, token)
                        continue
                    handled = await self.catch_up_once()
                    failures = 0
                    if handled is None:
                        # Another process is applying a batch; it reads what follows when it is done.
                        # Look again after the poll interval (sooner only if asked to stop), in case
                        # it stopped or died meanwhile.
                        woken, timeout = None, self.poll_interval
                    else:
                        self.last_error = None
                        continue  # probe again at once: more may have come, or be held back
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
                await wait_any(timeout, stop, *([woken] if woken is not None else []))
