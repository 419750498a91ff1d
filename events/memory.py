"""An in-memory event store with the PostgreSQL store's contract (events.log.EventLog): optimistic
concurrency on the stream version, idempotent re-appends by event id, an event id used in another
stream refused, payloads stored as JSON (what jsonb gives back), positions gap-free in commit order.
For the unit tier: services and reducers tested without a database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import orjson

from events.errors import IdempotencyConflict, WrongExpectedVersion
from events.types import AppendResult, NewEvent, RecordedEvent


class MemoryEventStore:
    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[object, RecordedEvent] = {}
        self._tx = 1000

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> AppendResult:
        stream = self._streams.setdefault(stream_id, [])
        current = len(stream)
        if not events:
            return AppendResult([], current)
        found = [self._by_id[e.event_id] for e in events if e.event_id in self._by_id]
        if found:
            if len(found) == len(events) and all(r.stream_id == stream_id for r in found):
                return AppendResult([r.position for r in found], max(r.stream_version for r in found), duplicate=True)
            where = "" if all(r.stream_id == stream_id for r in found) else " in another stream"
            raise IdempotencyConflict(
                f"{len(found)} of {len(events)} event ids are already stored{where}; "
                f"nothing was appended to {stream_id}"
            )
        if expected_version is not None and expected_version != current:
            raise WrongExpectedVersion(
                f"stream {stream_id} is at version {current}, expected {expected_version}; nothing was written"
            )
        self._tx += 1
        now = dt.datetime.now(dt.UTC)
        appended = []
        for i, e in enumerate(events, start=1):
            recorded = RecordedEvent(
                position=len(self.events) + 1, tx_id=self._tx, event_id=e.event_id, stream_id=stream_id,
                stream_version=current + i, type=e.type, schema_version=e.schema_version,
                data=orjson.loads(orjson.dumps(dict(e.data))), metadata=orjson.loads(orjson.dumps(dict(e.metadata))),
                recorded_at=now,
            )  # fmt: skip
            self.events.append(recorded)
            stream.append(recorded)
            self._by_id[e.event_id] = recorded
            appended.append(recorded)
        return AppendResult([r.position for r in appended], appended[-1].stream_version)

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, []))

    async def read_stream(self, stream_id: str, after_version: int = 0, limit: int = 10_000) -> list[RecordedEvent]:
        return self._streams.get(stream_id, [])[after_version : after_version + limit]

    async def read_stream_all(
        self, stream_id: str, after_version: int = 0, page_size: int = 1000
    ) -> list[RecordedEvent]:
        return list(self._streams.get(stream_id, [])[after_version:])

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self.events[after_position : after_position + limit]
