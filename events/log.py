"""What the application needs of an event store, as a Protocol: ``events.store.EventStore`` (PostgreSQL)
is the real one, ``events.memory.MemoryEventStore`` the in-memory one the unit tier runs against. A
contract test (tests/test_event_log_contract.py) runs the same cases against both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from events.types import AppendResult, NewEvent, RecordedEvent


class EventLog(Protocol):
    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> AppendResult:
        """Append atomically; ``expected_version`` None (any), 0 (no stream) or the stream's version.
        WrongExpectedVersion on a conflict; re-appending stored event ids is a no-op (``duplicate``)."""
        ...

    async def stream_version(self, stream_id: str) -> int: ...

    async def read_stream(self, stream_id: str, after_version: int = 0, limit: int = 10_000) -> list[RecordedEvent]: ...

    async def read_stream_all(
        self, stream_id: str, after_version: int = 0, page_size: int = 1000
    ) -> list[RecordedEvent]: ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]: ...
