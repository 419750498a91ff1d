"""The in-memory event store keeps the PostgreSQL store's contract: the same cases, the same answers."""

from __future__ import annotations

import uuid

import pytest

from events import EventStore, IdempotencyConflict, NewEvent, WrongExpectedVersion
from events.log import EventLog
from events.memory import MemoryEventStore


@pytest.fixture(params=["postgres", "memory"])
def log(request: pytest.FixtureRequest, store: EventStore) -> EventLog:
    return store if request.param == "postgres" else MemoryEventStore()


def event(n: int, event_id: uuid.UUID | None = None) -> NewEvent:
    data = {"n": n, "nested": {"list": [1, 2.5, None]}}
    return NewEvent("Thing", data, {"actor": "t"}, event_id=event_id or uuid.uuid4())


async def test_the_same_contract(log: EventLog) -> None:
    first = await log.append("s-1", [event(1), event(2)], 0)
    assert first.stream_version == 2 and not first.duplicate
    with pytest.raises(WrongExpectedVersion):
        await log.append("s-1", [event(3)], 0)
    with pytest.raises(WrongExpectedVersion):
        await log.append("s-1", [event(3)], 1)
    fixed = uuid.uuid4()
    once = await log.append("s-1", [event(3, fixed)], 2)
    again = await log.append("s-1", [event(3, fixed)], 2)  # a retry after a lost answer
    assert again.duplicate and again.positions == once.positions and again.stream_version == 3
    with pytest.raises(IdempotencyConflict):
        await log.append("s-2", [event(4, fixed)], None)  # the same id in another stream
    with pytest.raises(IdempotencyConflict):
        await log.append("s-1", [event(5, fixed), event(6)], None)  # half stored
    await log.append("s-2", [event(7)], None)
    assert await log.stream_version("s-1") == 3 and await log.stream_version("nothing") == 0
    page = await log.read_stream("s-1", 1, 1)
    assert [e.data["n"] for e in page] == [2] and page[0].stream_version == 2
    assert [e.data["n"] for e in await log.read_stream_all("s-1", page_size=2)] == [1, 2, 3]
    every = await log.read_all(0, 100)
    assert [e.data["n"] for e in every] == [1, 2, 3, 7]
    assert [e.position for e in every] == sorted(e.position for e in every)
    assert every[0].data["nested"] == {"list": [1, 2.5, None]} and every[0].metadata == {"actor": "t"}
    after = await log.read_all(every[1].position, 100)
    assert [e.data["n"] for e in after] == [3, 7]
