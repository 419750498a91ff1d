"""Property test: the event store against a simple in-memory model.

Hypothesis drives interleavings of appends (right, wrong and any expected version), idempotent
retries, racing appends, transactions held open across other commits (committed or rolled back)
and subscription catch-ups. After every step the store must agree with the model: stream contents,
versions, and a subscriber that has seen every committed event exactly once, per-stream in order.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from events import EventStore, NewEvent, WrongExpectedVersion
from events.connection import create_pool
from events.subscription import Subscription
from events.types import DbConn, RecordedEvent

STREAMS = ["a", "b", "c"]


class StoreMachine(RuleBasedStateMachine):
    dsn: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"m{uuid.uuid4().hex[:8]}-"
        self.pool: asyncpg.Pool = self.run(create_pool(self.dsn, min_size=2, max_size=6))
        self.store = EventStore(self.pool)
        self.model: dict[str, list[uuid.UUID]] = {s: [] for s in STREAMS}
        self.last_batch: tuple[str, list[NewEvent], list[int]] | None = None
        self.pending: tuple[Any, Any, str, list[NewEvent]] | None = None  # (conn, tx, stream, events)
        self.delivered: list[RecordedEvent] = []
        self.sub = Subscription(self.store, f"model-{self.prefix}", self._collect, batch_size=7)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _collect(self, _conn: DbConn, events: list[RecordedEvent]) -> None:
        self.delivered.extend(e for e in events if e.stream_id.startswith(self.prefix))

    def sid(self, stream: str) -> str:
        return self.prefix + stream

    @staticmethod
    def batch(n: int) -> list[NewEvent]:
        return [NewEvent("T", {"i": i}) for i in range(n)]

    @rule(stream=st.sampled_from(STREAMS), n=st.integers(1, 3), mode=st.sampled_from(["right", "wrong", "any"]))
    def append(self, stream: str, n: int, mode: str) -> None:
        if self.pending and self.pending[2] == stream:
            return  # would block on the open transaction's unique key
        events = self.batch(n)
        current = len(self.model[stream])
        expected = {"right": current, "wrong": current + 1, "any": None}[mode]
        if mode == "wrong":
            with pytest.raises(WrongExpectedVersion):
                self.run(self.store.append(self.sid(stream), events, expected))
            return
        result = self.run(self.store.append(self.sid(stream), events, expected))
        assert result.stream_version == current + n
        self.model[stream].extend(e.event_id for e in events)
        self.last_batch = (stream, events, result.positions)

    @precondition(lambda self: self.last_batch is not None)
    @rule()
    def retry_last(self) -> None:
        assert self.last_batch is not None
        stream, events, positions = self.last_batch
        result = self.run(self.store.append(self.sid(stream), events))
        assert result.duplicate and result.positions == positions

    @rule(stream=st.sampled_from(STREAMS))
    def race(self, stream: str) -> None:
        if self.pending and self.pending[2] == stream:
            return
        current = len(self.model[stream])
        batches = [self.batch(1), self.batch(2)]

        async def both() -> list[Any]:
            return await asyncio.gather(
                *(self.store.append(self.sid(stream), b, current) for b in batches), return_exceptions=True
            )

        results = self.run(both())
        winners = [(b, r) for b, r in zip(batches, results, strict=True) if not isinstance(r, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(r, WrongExpectedVersion) for r in results if isinstance(r, BaseException))
        self.model[stream].extend(e.event_id for e in winners[0][0])

    @precondition(lambda self: self.pending is None)
    @rule(stream=st.sampled_from(STREAMS), n=st.integers(1, 2))
    def open_transaction(self, stream: str, n: int) -> None:
        async def start() -> tuple[Any, Any]:
            conn = await self.pool.acquire()
            tx = conn.transaction()
            await tx.start()
            await conn.execute("SELECT pg_current_xact_id()")  # take an xid before appending
            await self.store.append(self.sid(stream), events, len(self.model[stream]), conn=conn)
            return conn, tx

        events = self.batch(n)
        conn, tx = self.run(start())
        self.pending = (conn, tx, stream, events)

    @precondition(lambda self: self.pending is not None)
    @rule(commit=st.booleans())
    def close_transaction(self, commit: bool) -> None:
        assert self.pending is not None
        conn, tx, stream, events = self.pending
        self.run(tx.commit() if commit else tx.rollback())
        self.run(self.pool.release(conn))
        if commit:
            self.model[stream].extend(e.event_id for e in events)
        self.pending = None

    @rule()
    def catch_up(self) -> None:
        self.run(self.sub.catch_up())

    @invariant()
    def streams_match_model(self) -> None:
        for stream in STREAMS:
            stored = self.run(self.store.read_stream(self.sid(stream)))
            assert [e.event_id for e in stored] == self.model[stream]
            assert [e.stream_version for e in stored] == list(range(1, len(stored) + 1))

    @invariant()
    def subscriber_sees_each_event_once_in_stream_order(self) -> None:
        ids = [e.event_id for e in self.delivered]
        assert len(ids) == len(set(ids))
        for stream in STREAMS:
            seen = [e.event_id for e in self.delivered if e.stream_id == self.sid(stream)]
            assert seen == self.model[stream][: len(seen)]

    def teardown(self) -> None:
        if self.pending is not None:
            conn, tx, _stream, _events = self.pending
            self.run(tx.rollback())
            self.run(self.pool.release(conn))
            self.pending = None
        # Everything committed must reach the subscriber once nothing is left open.
        self.run(self.sub.catch_up())
        for stream in STREAMS:
            assert [e.event_id for e in self.delivered if e.stream_id == self.sid(stream)] == self.model[stream]
        self.run(self.store.notifier.close())  # no notification task may outlive the pool and loop
        self.run(self.pool.close())
        self.loop.close()


def test_event_store_matches_model(dsn: str) -> None:
    StoreMachine.dsn = dsn
    runner = StoreMachine.TestCase
    runner.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    runner().runTest()
