"""NOTIFY cost: the application's appends notify coalesced (one in flight per process), not per append."""

from __future__ import annotations

import asyncio
import gc
import time

import asyncpg
import pytest

from events import EventStore, NewEvent, RecordedEvent, Subscription
from events.connection import create_pool
from events.hub import Hub
from events.notifier import CHANNEL, Notifier
from events.types import DbConn


async def test_concurrent_appends_are_coalesced_and_listener_sees_all(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    received: list[str] = []
    raw = await asyncpg.connect(dsn)  # counts every notification on the channel
    await raw.add_listener(CHANNEL, lambda *args: received.append(args[3]))
    seen: list[RecordedEvent] = []

    async def record(conn: DbConn, events: list[RecordedEvent]) -> None:
        seen.extend(events)

    hub = Hub(dsn)
    sub = Subscription(store, "watch", record, hub=hub, poll_interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(sub.run(stop))
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        results = await asyncio.gather(*(store.append(f"s-{i}", [NewEvent("Thing", {"i": i})]) for i in range(200)))
        await store.notifier.flush()
        deadline = time.monotonic() + 5
        while len(seen) < 200:
            assert time.monotonic() < deadline, f"listener saw {len(seen)} of 200 events"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # let the last notification arrive at the raw listener
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await raw.close()

    assert sorted(e.data["i"] for e in seen) == list(range(200))
    assert 1 <= store.notifier.sent <= 50, f"{store.notifier.sent} NOTIFYs for 200 appends"
    # The statement trigger stays quiet for the application's own connections: only the
    # notifier's messages arrived, and the last one carries the highest position written.
    assert len(received) == store.notifier.sent
    assert int(received[-1]) == max(r.last_position for r in results)


async def test_foreign_writer_notifies_once_per_statement(store: EventStore, dsn: str) -> None:
    received: list[str] = []
    raw = await asyncpg.connect(dsn)
    await raw.add_listener(CHANNEL, lambda *args: received.append(args[3]))
    foreign = await asyncpg.connect(dsn)  # no chronos.app_notifier setting: a psql user, a script
    try:
        position = await foreign.fetchval(
            """INSERT INTO events (event_id, stream_id, stream_version, type, data)
               SELECT gen_random_uuid(), 'foreign', v, 'Thing', '{}'::jsonb FROM generate_series(1, 5) v
               RETURNING position""",
        )
        top = await foreign.fetchval("SELECT max(position) FROM events")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
    finally:
        await foreign.close()
        await raw.close()
    assert position is not None
    assert received == [str(top)]


async def test_append_in_caller_transaction_notifies_after_committed(store: EventStore, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            result = await store.append("s", [NewEvent("Thing", {})], conn=conn)
            assert store.notifier.sent == 0  # nothing is visible yet, so nobody is woken
        store.committed(result.last_position)
    await store.notifier.flush()
    assert store.notifier.sent == 1


def pending_notifier_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "chronos-notifier" and not t.done()]


async def test_flush_also_waits_for_a_poke_that_lands_as_the_task_ends(store: EventStore) -> None:
    """A commit poked just as the notification task finishes starts a new task; flush (and close,
    which runs before the pool closes) waits for that one too, so none is left pending."""
    notifier = store.notifier
    notifier.poke(1)
    [first] = pending_notifier_tasks()
    flushing = asyncio.create_task(notifier.flush())
    await first  # resumed before `flushing` sees the task end: poke in between
    notifier.poke(2)
    assert len(pending_notifier_tasks()) == 1  # a second task
    await flushing
    assert pending_notifier_tasks() == []
    assert notifier.sent == 2


# The second half destroys a pending task on purpose; its coroutine then complains about the closed loop.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_closed_notifier_leaves_no_task_for_a_closing_loop(dsn: str) -> None:
    """What printed "Task was destroyed but it is pending!" (name='chronos-notifier') at interpreter
    exit: an owner that closed its pool and event loop right after appending (the property test's
    state machine did), while the notification task was in flight or in its pause after sending.
    Closing the notifier first -- as ``Runtime.close`` does -- sends what is pending, cuts the pause
    short and starts no new task. (A long pause makes the old ending certain, not a matter of luck.)"""

    def run_owner(close_notifier: bool) -> list[str]:
        reports: list[str] = []
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: reports.append(str(context.get("message"))))
        pool = loop.run_until_complete(create_pool(dsn, min_size=1, max_size=2))
        notifier = Notifier(pool, min_interval=60)
        loop.run_until_complete(EventStore(pool, notifier).append("owner", [NewEvent("Thing", {})]))
        loop.run_until_complete(sent_one(notifier))  # sent; now in its pause
        if close_notifier:
            loop.run_until_complete(notifier.close())
            notifier.poke(99)  # a late commit after closing starts no task
        loop.run_until_complete(pool.close())
        loop.close()
        del notifier, pool, loop
        gc.collect()
        return reports

    assert run_owner(close_notifier=True) == []
    # The test has teeth: without closing the notifier its task is destroyed pending.
    assert "Task was destroyed but it is pending!" in run_owner(close_notifier=False)


async def sent_one(notifier: Notifier) -> None:
    for _ in range(1000):
        if notifier.sent:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the notification was not sent within 10 s")
