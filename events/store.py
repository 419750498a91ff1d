"""The event store: append with optimistic concurrency, read streams and the whole log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg

from events.errors import AppendOnlyViolation, EventStoreError, IdempotencyConflict, WrongExpectedVersion
from events.notifier import Notifier
from events.sqlfiles import query
from events.types import AppendResult, Cursor, DbConn, NewEvent, RecordedEvent

ANY = None
"""``expected_version`` that accepts any current version."""
NO_STREAM = 0
"""``expected_version`` that requires the stream not to exist yet."""
ANY_RETRIES = 20
"""How often an ``ANY`` append outside a transaction tries again after a concurrent writer took its
version (each retry is one more round trip; twenty writers racing for one stream still all land)."""

_ERRORS: dict[str, type[EventStoreError]] = {
    "CH001": WrongExpectedVersion,
    "CH002": AppendOnlyViolation,
    "CH003": IdempotencyConflict,
}


def translate(exc: asyncpg.PostgresError) -> EventStoreError:
    """Map the store's own SQLSTATEs to typed errors; anything else becomes EventStoreError."""
    kind = _ERRORS.get(getattr(exc, "sqlstate", "") or "", EventStoreError)
    return kind(getattr(exc, "message", None) or str(exc))


def to_event(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"],
        tx_id=row["tx_id"],
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        type=row["type"],
        schema_version=row["schema_version"],
        data=row["data"],
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
    )


class EventStore:
    """Appends and reads events in PostgreSQL.

    ``append`` is one round trip for a whole batch. When ``conn`` is given and holds an open
    transaction the append joins it, and the caller calls :meth:`committed` after its commit so
    listeners wake; otherwise the append commits on its own and listeners are woken.
    """

    def __init__(self, pool: asyncpg.Pool, notifier: Notifier | None = None) -> None:
        self.pool = pool
        self.notifier = notifier if notifier is not None else Notifier(pool)

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None = ANY,
        *,
        conn: DbConn | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically; one round trip on the success path.

        ``expected_version``: ``ANY`` (None), ``NO_STREAM`` (0) or the version the stream must be at.
        Raises WrongExpectedVersion (nothing written) on a conflict. Appending event ids that are
        already stored in this stream is a no-op returning their original positions.
        """
        if not events:
            return AppendResult([], await self.stream_version(stream_id, conn=conn))
        if conn is not None:
            in_transaction = conn.is_in_transaction()
            if in_transaction:  # the caller's transaction: a conflict aborts it, the caller decides
                return await self._append_on(conn, stream_id, events, expected_version)
            result = await self._append_retrying(conn, stream_id, events, expected_version)
        else:
            async with self.pool.acquire() as own:
                result = await self._append_retrying(own, stream_id, events, expected_version)
        self.notifier.poke(result.last_position)  # committed already: wake listeners now
        return result

    async def _append_retrying(
        self, conn: DbConn, stream_id: str, events: Sequence[NewEvent], expected: int | None
    ) -> AppendResult:
        """An append that commits on its own. With ``ANY`` a concurrent writer that took the next
        version is no conflict (nothing was expected of the version): append again after it."""
        for attempt in range(ANY_RETRIES + 1):
            try:
                return await self._append_on(conn, stream_id, events, expected)
            except WrongExpectedVersion:
                if expected is not ANY or attempt == ANY_RETRIES:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _append_on(
        self, conn: DbConn, stream_id: str, events: Sequence[NewEvent], expected: int | None
    ) -> AppendResult:
        try:
            if len(events) == 1:
                e = events[0]
                in_tx = conn.is_in_transaction()
                try:
                    rows = await conn.fetch(
                        query("events", "append_one" if in_tx else "append_one_plain"),
                        stream_id, expected, e.event_id, e.type, e.schema_version, dict(e.data), dict(e.metadata),
                    )  # fmt: skip
                except asyncpg.UniqueViolationError as exc:
                    if in_tx or exc.constraint_name != "events_event_id_key":
                        raise
                    rows = []  # stored already: an idempotent retry (or an id reused elsewhere)
            else:
                args = (
                    stream_id,
                    expected,
                    [e.event_id for e in events],
                    [e.type for e in events],
                    [e.schema_version for e in events],
                    [dict(e.data) for e in events],
                    [dict(e.metadata) for e in events],
                )
                try:
                    async with conn.transaction():  # a savepoint when the caller holds a transaction
                        rows = await conn.fetch(query("events", "append_many"), *args)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name != "events_event_id_key":
                        raise
                    rows = []  # some ids are stored already: an idempotent retry, or a conflict
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_stream_version_key":
                raise WrongExpectedVersion(
                    f"concurrent append to stream {stream_id}: another writer took the next version; "
                    "nothing was written"
                ) from exc
            raise translate(exc) from exc
        except asyncpg.PostgresError as exc:
            raise translate(exc) from exc
        if len(rows) == len(events):
            return AppendResult([r["position"] for r in rows], rows[-1]["stream_version"])
        return await self._explain_empty(conn, stream_id, events, expected)

    async def _explain_empty(
        self, conn: DbConn, stream_id: str, events: Sequence[NewEvent], expected: int | None
    ) -> AppendResult:
        """Nothing was inserted: an idempotent retry, or the stream is not at the expected version."""
        ids = [e.event_id for e in events]
        found = {r["event_id"]: r for r in await conn.fetch(query("events", "existing_ids"), ids)}
        if found:
            if len(found) == len(ids) and all(r["stream_id"] == stream_id for r in found.values()):
                rows = [found[i] for i in ids]
                return AppendResult(
                    [r["position"] for r in rows], max(r["stream_version"] for r in rows), duplicate=True
                )
            raise IdempotencyConflict(
                f"{len(found)} of {len(ids)} event ids are already stored"
                + ("" if all(r["stream_id"] == stream_id for r in found.values()) else " in another stream")
                + f"; nothing was appended to {stream_id}"
            )
        current = await self.stream_version(stream_id, conn=conn)
        raise WrongExpectedVersion(
            f"stream {stream_id} is at version {current}, expected {expected}; nothing was written"
        )

    def committed(self, position: int) -> None:
        """Tell listeners that a transaction which appended up to ``position`` has committed."""
        self.notifier.poke(position)

    async def stream_version(self, stream_id: str, *, conn: DbConn | None = None) -> int:
        target = conn if conn is not None else self.pool
        value = await target.fetchval(query("events", "stream_version"), stream_id)
        return int(value)

    async def read_stream(self, stream_id: str, after_version: int = 0, limit: int = 10_000) -> list[RecordedEvent]:
        rows = await self.pool.fetch(query("events", "read_stream"), stream_id, after_version, limit)
        return [to_event(r) for r in rows]

    async def read_stream_after_position(self, stream_id: str, after_position: int, limit: int) -> list[RecordedEvent]:
        """Up to ``limit`` events of a stream whose position is after ``after_position``, in stream order."""
        rows = await self.pool.fetch(query("events", "read_stream_after_position"), stream_id, after_position, limit)
        return [to_event(r) for r in rows]

    async def read_stream_all(
        self, stream_id: str, after_version: int = 0, page_size: int = 1000
    ) -> list[RecordedEvent]:
        """Every event of a stream after ``after_version``, read in pages (no cap on the length)."""
        out: list[RecordedEvent] = []
        while True:
            page = await self.read_stream(stream_id, after_version, page_size)
            out += page
            if len(page) < page_size:
                return out
            after_version = page[-1].stream_version

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """One page of committed events in position order (replay, inspection; not for tailing)."""
        rows = await self.pool.fetch(query("events", "read_all"), after_position, limit)
        return [to_event(r) for r in rows]

    async def iter_all(self, after_position: int = 0, page_size: int = 1000) -> AsyncIterator[RecordedEvent]:
        """Every committed event after ``after_position``, fetched in pages."""
        position = after_position
        while True:
            page = await self.read_all(position, page_size)
            for event in page:
                yield event
            if len(page) < page_size:
                return
            position = page[-1].position

    async def read_safe(self, after: Cursor, limit: int = 1000, *, conn: DbConn | None = None) -> list[RecordedEvent]:
        """Events after ``after`` that can never be preceded by a later commit (gap-free tail)."""
        target = conn if conn is not None else self.pool
        rows = await target.fetch(query("events", "read_safe"), str(after.tx_id), after.position, limit)
        return [to_event(r) for r in rows]

    async def head_position(self) -> int:
        return int(await self.pool.fetchval(query("events", "head_position")))
