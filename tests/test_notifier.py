"""NOTIFY cost: the application's appends notify coalesced (one in flight per process), not per append."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from events import EventStore, NewEvent, RecordedEvent, Subscription
from events.notifier import CHANNEL
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

    sub = Subscription(store, "watch", record, dsn=dsn, poll_interval=30)
    stop = asyncio.Event()
    task = asyncio.create_task(sub.run(stop))
    try:
        await asyncio.wait_for(sub.listening.wait(), 10)
        results = await asyncio.gather(
            *(store.append(f"s-{i}", [NewEvent("Thing", {"i": i})]) for i in range(200))
        )
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
