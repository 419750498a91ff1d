"""Event store contract: appends, optimistic concurrency, idempotency, append-only."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from events import NO_STREAM, EventStore, IdempotencyConflict, NewEvent, WrongExpectedVersion
from tests.api_support import wait_until


def ev(n: int, kind: str = "Thing") -> NewEvent:
    return NewEvent(kind, {"n": n}, {"actor": "test", "correlation_id": "c-1"})


async def count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events"))


async def test_append_and_read_stream(store: EventStore) -> None:
    first = await store.append("doc-1", [ev(1), ev(2)], NO_STREAM)
    assert first.stream_version == 2
    assert first.positions == sorted(first.positions)
    second = await store.append("doc-1", [ev(3)], 2)
    assert second.stream_version == 3
    events = await store.read_stream("doc-1")
    assert [e.data["n"] for e in events] == [1, 2, 3]
    assert [e.stream_version for e in events] == [1, 2, 3]
    assert events[0].metadata == {"actor": "test", "correlation_id": "c-1"}
    assert events[0].type == "Thing" and events[0].schema_version == 1
    assert await store.read_stream("doc-1", after_version=2) == events[2:]


async def test_wrong_expected_version_writes_nothing(store: EventStore, pool: asyncpg.Pool) -> None:
    await store.append("doc-1", [ev(1)], NO_STREAM)
    before = await count(pool)
    with pytest.raises(WrongExpectedVersion, match="at version 1, expected 0"):
        await store.append("doc-1", [ev(2), ev(3)], NO_STREAM)
    with pytest.raises(WrongExpectedVersion):
        await store.append("doc-1", [ev(2)], 5)
    assert await count(pool) == before
    assert await store.stream_version("doc-1") == 1


async def test_concurrent_appends_at_same_version_one_wins(store: EventStore, pool: asyncpg.Pool) -> None:
    await store.append("doc-1", [ev(0)], NO_STREAM)
    results = await asyncio.gather(
        *(store.append("doc-1", [ev(i), ev(i + 100)], 1) for i in range(1, 9)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, WrongExpectedVersion) for r in losers)
    assert await count(pool) == 3  # the first event and the winner's two: losers wrote nothing


async def test_conflict_with_open_transaction_waits_then_fails(store: EventStore, pool: asyncpg.Pool) -> None:
    """A writer racing an uncommitted append for the same version fails once that one commits."""
    await store.append("doc-1", [ev(0)], NO_STREAM)
    async with pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await store.append("doc-1", [ev(1)], 1, conn=holder)
        racer = asyncio.create_task(store.append("doc-1", [ev(2)], 1))
        await asyncio.sleep(0.2)
        assert not racer.done()  # blocked on the unique key of the open transaction
        await tx.commit()
        with pytest.raises(WrongExpectedVersion, match="concurrent append"):
            await racer
    assert [e.data["n"] for e in await store.read_stream("doc-1")] == [0, 1]


async def test_any_version_append_racing_an_open_transaction_lands_after_it(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    """With ANY nothing is expected of the version: a writer that lost the race for the next version
    appends after the winner (two `chronos reprocess` at once used to fail with WrongExpectedVersion)."""
    await store.append("doc-1", [ev(0)], NO_STREAM)
    async with pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await store.append("doc-1", [ev(1)], 1, conn=holder)
        racers = [asyncio.create_task(store.append("doc-1", batch)) for batch in ([ev(2)], [ev(3), ev(4)])]
        waiting = "SELECT count(*) = 2 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
        await wait_until(lambda: pool.fetchval(waiting), timeout=30, interval=0.02)  # both wait on its unique key
        await tx.commit()
        results = await asyncio.gather(*racers)
    # either racer may land first: the single event at 3 (the pair then ends at 5) or the pair at 3-4
    assert sorted(r.stream_version for r in results) in ([3, 5], [4, 5])
    stream = await store.read_stream("doc-1")
    assert [e.stream_version for e in stream] == [1, 2, 3, 4, 5]
    assert sorted(e.data["n"] for e in stream) == [0, 1, 2, 3, 4]


async def test_many_concurrent_any_version_appends_all_land(store: EventStore, pool: asyncpg.Pool) -> None:
    results = await asyncio.gather(*(store.append("doc-1", [ev(i)]) for i in range(20)))
    assert sorted(r.stream_version for r in results) == list(range(1, 21))
    assert await count(pool) == 20


async def test_idempotent_reappend_returns_original_positions(store: EventStore, pool: asyncpg.Pool) -> None:
    batch = [ev(1), ev(2), ev(3)]
    first = await store.append("doc-1", batch, NO_STREAM)
    again = await store.append("doc-1", batch, NO_STREAM)  # a retry after a lost response
    assert again.positions == first.positions
    single = [ev(4)]
    one = await store.append("doc-1", single, 3)
    assert (await store.append("doc-1", single, 3)).positions == one.positions
    assert (await store.append("doc-1", single)).positions == one.positions  # ANY version
    assert await count(pool) == 4


async def test_mixed_batch_of_stored_and_new_ids_is_refused(store: EventStore, pool: asyncpg.Pool) -> None:
    stored = ev(1)
    await store.append("doc-1", [stored], NO_STREAM)
    with pytest.raises(IdempotencyConflict):
        await store.append("doc-1", [stored, ev(2)])
    with pytest.raises(IdempotencyConflict, match="another stream"):
        await store.append("doc-2", [stored])
    assert await count(pool) == 1


async def test_append_inside_caller_transaction_rolls_back_with_it(store: EventStore, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await store.append("doc-1", [ev(1)], NO_STREAM, conn=conn)
                raise RuntimeError("caller fails after appending")
    assert await count(pool) == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'Changed'",
        "DELETE FROM events",
        "TRUNCATE events",
    ],
)
async def test_events_are_append_only(store: EventStore, pool: asyncpg.Pool, statement: str) -> None:
    await store.append("doc-1", [ev(1)], NO_STREAM)
    with pytest.raises(asyncpg.PostgresError, match="append-only") as info:
        await pool.execute(statement)
    assert info.value.sqlstate == "CH002"
    rows = await store.read_stream("doc-1")
    assert len(rows) == 1 and rows[0].type == "Thing"


async def test_read_all_pages_in_position_order(store: EventStore) -> None:
    for s in range(5):
        await store.append(f"doc-{s}", [ev(s * 10 + i) for i in range(7)], NO_STREAM)
    page = await store.read_all(0, 10)
    assert len(page) == 10
    everything = [e async for e in store.iter_all(0, page_size=4)]
    assert len(everything) == 35
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    assert len({e.event_id for e in everything}) == 35


async def test_event_ids_are_time_ordered_uuid7() -> None:
    ids = [NewEvent("X", {}).event_id for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    assert len(set(ids)) == 50
    assert isinstance(ids[0], uuid.UUID)


async def test_append_only_holds_for_a_role_granted_update_and_delete(store: EventStore, pool: asyncpg.Pool) -> None:
    """The refusal is the database's own: even a role granted UPDATE/DELETE/TRUNCATE cannot change rows."""
    await store.append("doc-1", [ev(1)], NO_STREAM)
    role = f"chronos_writer_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await conn.execute(f'CREATE ROLE "{role}" NOLOGIN NOSUPERUSER')
        try:
            await conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON events TO "{role}"')
            for statement in ("UPDATE events SET type = 'Changed'", "DELETE FROM events", "TRUNCATE events"):
                with pytest.raises(asyncpg.PostgresError, match="append-only") as info:
                    async with conn.transaction():
                        await conn.execute(f'SET LOCAL ROLE "{role}"')
                        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                        await conn.execute(statement)
                assert info.value.sqlstate == "CH002"
        finally:
            await conn.execute(f'REVOKE ALL ON events FROM "{role}"')
            await conn.execute(f'DROP ROLE "{role}"')
    assert [e.type for e in await store.read_stream("doc-1")] == ["Thing"]
