"""Subscriptions: gap-free under out-of-order commits, durable, exactly-once (also across processes,
without waiting on a lock), woken by NOTIFY through the process's hub."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import asyncpg
import pytest

from events import EventStore, NewEvent, RecordedEvent, Subscription
from events.connection import create_pool
from events.hub import Hub
from events.types import Cursor, DbConn


def ev(n: int) -> NewEvent:
    return NewEvent("Thing", {"n": n}, {"actor": "test"})


class Recorder:
    """A handler that remembers what it was given (after its transaction committed)."""

    def __init__(self) -> None:
        self.seen: list[RecordedEvent] = []

    async def __call__(self, conn: DbConn, events: list[RecordedEvent]) -> None:
        self.seen.extend(events)

    @property
    def ns(self) -> list[int]:
        return [e.data["n"] for e in self.seen]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until ``check()`` holds; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running(sub: Subscription) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``sub`` in the background until the block ends; its errors surface at the end."""
    assert sub.hub is not None
    stop = asyncio.Event()
    task = asyncio.create_task(sub.run(stop))
    try:
        await asyncio.wait_for(sub.hub.connected.wait(), 10)
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def naive_position_reader(pool: asyncpg.Pool, last: int) -> list[int]:
    """What a "position > checkpoint" subscriber would read: the scheme the store must not use."""
    rows = await pool.fetch("SELECT position FROM events WHERE position > $1 ORDER BY position", last)
    return [r["position"] for r in rows]


async def test_open_transaction_holds_back_later_commits(store: EventStore, pool: asyncpg.Pool, dsn: str) -> None:
    """A commits nothing yet (lower position), B commits (higher position): nothing past A is delivered."""
    rec = Recorder()
    sub = Subscription(store, "proj", rec)
    async with pool.acquire() as a:
        tx = a.transaction()
        await tx.start()
        ra = await store.append("stream-a", [ev(1)], conn=a)
        rb = await store.append("stream-b", [ev(2)])
        assert rb.last_position > ra.last_position
        assert await sub.catch_up() == 0  # B is committed but A, older, is still open
        assert await sub.has_pending()
        await tx.commit()
        store.committed(ra.last_position)
    assert await sub.catch_up() == 2
    assert rec.ns == [1, 2]
    assert await sub.catch_up() == 0


async def test_late_commit_of_lower_position_is_delivered_once(store: EventStore, pool: asyncpg.Pool, dsn: str) -> None:
    """The nasty order: B takes its xid first, A appends a lower position with a higher xid and stays
    open, B appends a higher position and commits, then A commits. Both arrive, once each; a
    position checkpoint would have skipped A's event."""
    rec = Recorder()
    sub = Subscription(store, "proj", rec)
    async with pool.acquire() as a, pool.acquire() as b:
        tx_b = b.transaction()
        await tx_b.start()
        xid_b = int(await b.fetchval("SELECT pg_current_xact_id()::text"))
        tx_a = a.transaction()
        await tx_a.start()
        ra = await store.append("stream-a", [ev(1)], conn=a)
        rb = await store.append("stream-b", [ev(2)], conn=b)
        await tx_b.commit()
        assert ra.last_position < rb.last_position

        assert await sub.catch_up() == 1  # B is final (its xid is below every open one); A is not
        assert rec.ns == [2]
        assert rec.seen[0].tx_id == xid_b
        naive_checkpoint = rb.last_position  # what a position-based subscriber would have stored

        await tx_a.commit()
    assert await sub.catch_up() == 1
    assert rec.ns == [2, 1]
    assert rec.seen[1].tx_id > xid_b
    assert await sub.catch_up() == 0
    assert sorted(e.event_id for e in rec.seen) == sorted({e.event_id for e in rec.seen})
    # The test has teeth: the naive reader never sees A's event.
    assert ra.last_position not in await naive_position_reader(pool, naive_checkpoint)


async def test_running_subscriber_waits_for_open_transaction(store: EventStore, pool: asyncpg.Pool, dsn: str) -> None:
    rec = Recorder()
    sub = Subscription(store, "proj", rec, hub=Hub(dsn), poll_interval=30)
    async with running(sub), pool.acquire() as a:
        tx = a.transaction()
        await tx.start()
        await store.append("stream-a", [ev(1)], conn=a)
        await store.append("stream-b", [ev(2)])
        await asyncio.sleep(0.5)
        assert rec.seen == []  # B's notification woke it, but A still holds the log back
        await tx.commit()  # no store.committed(): the subscriber finds it on its own
        await eventually(lambda: len(rec.seen) == 2, timeout=3)
    assert rec.ns == [1, 2]


async def test_resumes_from_durable_checkpoint_after_restart(store: EventStore, dsn: str) -> None:
    first = Recorder()
    await store.append("s", [ev(1), ev(2), ev(3)])
    assert await Subscription(store, "proj", first, batch_size=2).catch_up() == 3
    await store.append("s", [ev(4), ev(5)])

    # A new process: its own pool, store and Subscription object with the same name.
    pool2 = await create_pool(dsn, min_size=1, max_size=2)
    try:
        second = Recorder()
        sub2 = Subscription(EventStore(pool2), "proj", second)
        cursor = await sub2.checkpoint()
        assert cursor == first.seen[-1].cursor
        assert await sub2.catch_up() == 2
        assert second.ns == [4, 5]
        other = Recorder()  # another name starts from the beginning
        assert await Subscription(EventStore(pool2), "other", other).catch_up() == 5
        await sub2.reset()
        assert await sub2.catch_up() == 5
    finally:
        await pool2.close()


async def test_listener_killed_reconnects_and_misses_nothing(store: EventStore, pool: asyncpg.Pool, dsn: str) -> None:
    rec = Recorder()
    # A long poll interval: only the reconnect's re-read can deliver what was appended meanwhile.
    hub = Hub(dsn, name="hub-killme", reconnect_delay=3.0)
    sub = Subscription(store, "killme", rec, hub=hub, poll_interval=30)
    async with running(sub):
        await store.append("s", [ev(1)])
        await eventually(lambda: rec.ns == [1])
        await asyncio.sleep(0.5)  # let it commit and settle into its 30 s wait (no quick re-look)
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            "hub-killme",
        )
        assert killed == 1
        await eventually(lambda: not hub.connected.is_set())
        # Appended while no listener exists: these notifications are lost for good.
        for n in (2, 3, 4):
            await store.append("s", [ev(n)])
        await store.notifier.flush()
        await asyncio.sleep(0.2)
        assert rec.ns == [1]
        await asyncio.wait_for(hub.connected.wait(), 5)
        await eventually(lambda: len(rec.seen) == 4, timeout=3)
        assert hub.reconnects == 1
        listeners = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hub-killme'")
        assert listeners == 1
        await store.append("s", [ev(5)])  # and the new connection LISTENs again
        await eventually(lambda: len(rec.seen) == 5, timeout=3)
    assert rec.ns == [1, 2, 3, 4, 5]


@contextlib.asynccontextmanager
async def process(dsn: str, name: str) -> AsyncIterator[tuple[EventStore, Hub]]:
    """What another process has: its own pool, store and wake-up hub."""
    own = await create_pool(dsn, min_size=1, max_size=3)
    try:
        yield EventStore(own), Hub(dsn, name=name)
    finally:
        await own.close()


def applying(who: str) -> Callable[[DbConn, list[RecordedEvent]], Awaitable[None]]:
    """A handler that records which process applied each event (table ``applied``)."""

    async def apply(conn: DbConn, events: list[RecordedEvent]) -> None:
        await conn.executemany(
            "INSERT INTO applied (event_id, worker) VALUES ($1, $2)", [(e.event_id, who) for e in events]
        )
        await asyncio.sleep(0.01)  # widen the window in which the other instance could interfere

    return apply


async def test_two_processes_running_one_subscription_never_apply_twice(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    await pool.execute("CREATE TABLE applied (event_id uuid NOT NULL, worker text NOT NULL)")

    async def writer(w: int) -> None:
        for k in range(40):
            await store.append(f"w-{w}", [ev(k)])

    async with process(dsn, "hub-a") as (store_a, hub_a), process(dsn, "hub-b") as (store_b, hub_b):
        subs = [
            Subscription(s, "shared", applying(w), hub=h, batch_size=7, poll_interval=0.2)
            for s, h, w in ((store_a, hub_a, "a"), (store_b, hub_b, "b"))
        ]
        async with running(subs[0]), running(subs[1]):
            await asyncio.gather(*(writer(w) for w in range(5)))
            deadline = time.monotonic() + 15
            while await pool.fetchval("SELECT count(*) FROM applied") < 200:
                assert time.monotonic() < deadline, "not every event was applied"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # give a double application the chance to show
    row = await pool.fetchrow("SELECT count(*) AS total, count(DISTINCT event_id) AS distinct FROM applied")
    assert row is not None and (row["total"], row["distinct"]) == (200, 200)
    assert await pool.fetchval("SELECT count(*) FROM events") == 200


async def test_loser_holds_no_connection_while_another_process_applies(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    """Process A is inside a batch (holding the checkpoint); process B, woken by every append and by
    its poll, finds the checkpoint taken and goes back to waiting. B has a pool of one connection, and
    the test can take that connection at any moment: B does not hold it while it waits, and no
    backend queues on the checkpoint row. Once A is done every event is applied exactly once."""
    await pool.execute("CREATE TABLE applied (event_id uuid NOT NULL, worker text NOT NULL)")
    gate, inside = asyncio.Event(), asyncio.Event()

    async def apply_a(conn: DbConn, events: list[RecordedEvent]) -> None:
        inside.set()
        await gate.wait()  # a long batch
        await conn.executemany(
            "INSERT INTO applied (event_id, worker) VALUES ($1, $2)", [(e.event_id, "a") for e in events]
        )

    await store.append("s", [ev(n) for n in range(3)])
    pool_b = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with process(dsn, "hub-a") as (store_a, hub_a):
            sub_a = Subscription(store_a, "shared", apply_a, hub=hub_a, batch_size=2, poll_interval=0.1)
            sub_b = Subscription(EventStore(pool_b), "shared", applying("b"), hub=Hub(dsn), batch_size=2,
                                 poll_interval=0.1)  # fmt: skip
            async with running(sub_a):
                await asyncio.wait_for(inside.wait(), 10)
                async with running(sub_b):
                    lock_waiters = []
                    for n in range(3, 23):  # each append notifies, and wakes B
                        await store.append("s", [ev(n)])
                        async with pool_b.acquire(timeout=10) as conn:  # B's only connection is free
                            lock_waiters.append(
                                await conn.fetchval(
                                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'"
                                )
                            )
                        await asyncio.sleep(0.05)
                    await eventually(lambda: sub_b.busy >= 3)  # B looked, several times, and found it taken
                    assert lock_waiters == [0] * 20  # nobody queued on the checkpoint row
                    gate.set()
                    deadline = time.monotonic() + 15
                    while await pool.fetchval("SELECT count(*) FROM applied") < 23:
                        assert time.monotonic() < deadline, "not every event was applied"
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.3)  # give a double application the chance to show
    finally:
        await pool_b.close()
    row = await pool.fetchrow("SELECT count(*) AS total, count(DISTINCT event_id) AS distinct FROM applied")
    assert row is not None and (row["total"], row["distinct"]) == (23, 23)
    last = (await store.read_safe(Cursor(0, 0), 100))[-1]
    assert await Subscription(store, "shared", applying("c")).checkpoint() == last.cursor


async def test_failing_handler_rolls_back_writes_and_checkpoint(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    await pool.execute("CREATE TABLE projected (event_id uuid PRIMARY KEY, n integer NOT NULL)")
    fail_on = {3}

    async def project(conn: DbConn, events: list[RecordedEvent]) -> None:
        for e in events:
            await conn.execute("INSERT INTO projected VALUES ($1, $2)", e.event_id, e.data["n"])
            if e.data["n"] in fail_on:
                raise RuntimeError(f"projection bug on event {e.data['n']}")

    await store.append("s", [ev(n) for n in range(1, 6)])
    sub = Subscription(store, "proj", project)
    before = await sub.checkpoint()
    with pytest.raises(RuntimeError, match="event 3"):
        await sub.catch_up()
    assert await pool.fetchval("SELECT count(*) FROM projected") == 0  # events 1 and 2 rolled back too
    assert await sub.checkpoint() == before

    fail_on.clear()  # the bug is fixed: the batch is applied once, from the old checkpoint
    assert await sub.catch_up() == 5
    assert [r["n"] for r in await pool.fetch("SELECT n FROM projected ORDER BY n")] == [1, 2, 3, 4, 5]
    assert await sub.catch_up() == 0


async def test_run_survives_a_handler_bug_and_resumes_once_fixed(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    broken = True
    seen: list[int] = []

    async def project(conn: DbConn, events: list[RecordedEvent]) -> None:
        if broken:
            raise KeyError("missing field")
        seen.extend(e.data["n"] for e in events)

    await store.append("s", [ev(n) for n in range(1, 4)])
    sub = Subscription(store, "proj", project, hub=Hub(dsn), poll_interval=0.05)
    async with running(sub) as task:
        await eventually(lambda: sub.last_error is not None, timeout=5)
        assert "KeyError" in (sub.last_error or "") and not task.done()  # stalled, alive
        assert await sub.checkpoint() == Cursor(0, 0)
        broken = False
        await eventually(lambda: seen == [1, 2, 3], timeout=10)


async def test_notify_wakes_subscriber_long_before_poll(store: EventStore, pool: asyncpg.Pool, dsn: str) -> None:
    rec = Recorder()
    sub = Subscription(store, "proj", rec, hub=Hub(dsn), poll_interval=30)
    async with running(sub):
        await asyncio.sleep(0.3)  # the first catch-up is done: now it waits up to 30 s
        await store.append("s", [ev(1)])
        took = await eventually(lambda: rec.ns == [1], timeout=2)
        assert took < 2

        # A foreign writer with plain SQL (no app notifier): the statement trigger notifies.
        foreign = await asyncpg.connect(dsn)
        try:
            await foreign.execute(
                "INSERT INTO events (event_id, stream_id, stream_version, type, data) "
                "VALUES ($1, 'foreign', 1, 'Thing', '{\"n\": 2}'), ($2, 'foreign', 2, 'Thing', '{\"n\": 3}')",
                uuid.uuid4(),
                uuid.uuid4(),
            )
        finally:
            await foreign.close()
        took = await eventually(lambda: len(rec.seen) == 3, timeout=2)
        assert took < 2
    assert rec.ns == [1, 2, 3]


async def test_only_rebuildable_handlers_commit_without_waiting_for_the_flush(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    """Projections and the dispatcher commit their batches with synchronous_commit off (the log
    rebuilds them); a subscription is durable unless it says otherwise, and the setting stays in the
    batch's own transaction."""
    from app.pipeline.backend import dispatcher_service
    from events.blobs import PgBlobStore
    from projections.runner import subscriptions

    seen: dict[str, str] = {}

    def recording(name: str) -> Callable[[DbConn, list[RecordedEvent]], Awaitable[None]]:
        async def handler(conn: DbConn, events: list[RecordedEvent]) -> None:
            seen[name] = await conn.fetchval("SELECT current_setting('synchronous_commit')")

        return handler

    await store.append("s", [ev(1)])
    await Subscription(store, "durable", recording("durable")).catch_up()
    await Subscription(store, "rebuildable", recording("rebuildable"), durable=False).catch_up()
    assert seen == {"durable": "on", "rebuildable": "off"}
    assert await pool.fetchval("SELECT current_setting('synchronous_commit')") == "on"

    assert all(not s.durable for s in subscriptions(store, PgBlobStore(pool)))
    service = dispatcher_service(SimpleNamespace(store=store, hub=None))  # type: ignore[arg-type]
    dispatcher = service.run.__self__  # type: ignore[attr-defined]
    assert isinstance(dispatcher, Subscription) and not dispatcher.durable
