"""``/events/stream`` against a real uvicorn server (own thread, own event loop, own pool):
events appended after connecting arrive in order; a reconnect with Last-Event-ID misses none and
repeats none; a transaction that commits late is still delivered; heartbeats while idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson

from events.store import EventStore
from events.types import NewEvent
from tests.api_support import server_thread, settings_for

TIMEOUT = httpx.Timeout(60.0)


@dataclass
class Message:
    id: str | None
    data: dict[str, object]


@dataclass
class Reader:
    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)

    async def next(self, timeout: float = 30) -> Message:
        """The next dispatched message (comments are collected on the side)."""
        event_id: str | None = None
        data: list[str] = []
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line == "":
                    if data:
                        return Message(event_id, orjson.loads("\n".join(data)))
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data.append(line[6:])
        raise AssertionError("the stream ended")

    async def comment(self, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line.startswith(":"):
                    return line
        raise AssertionError("the stream ended")


@contextlib.asynccontextmanager
async def stream(url: str, query: str = "", **headers: str) -> AsyncIterator[Reader]:
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as client,
        client.stream("GET", f"{url}/events/stream{query}", headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response, response.aiter_lines())


async def append(store: EventStore, n: int, stream_id: str = "test-stream", start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        e = NewEvent("Ping", {"i": i})
        await store.append(stream_id, [e])
        ids.append(str(e.event_id))
    return ids


async def test_live_events_arrive_in_order_and_resume_after_reconnect(dsn: str, store: EventStore) -> None:
    await append(store, 3, start=-3)  # history before connecting: not part of a "now" stream
    with server_thread(settings_for(dsn)) as server:
        async with stream(server.url) as reader:
            first = reader.response.headers
            assert first["cache-control"] == "no-cache"
            expected = await append(store, 20)
            got = [await reader.next() for _ in range(10)]
        assert [m.data["event_id"] for m in got] == expected[:10]
        assert [m.data["data"] for m in got] == [{"i": i} for i in range(10)]
        last_id = got[-1].id
        assert last_id == got[-1].data["cursor"]
        more = await append(store, 5, start=20)  # appended while disconnected
        async with stream(server.url, **{"Last-Event-ID": str(last_id)}) as reader:
            rest = [await reader.next() for _ in range(15)]
            tail = await append(store, 2, start=25)
            rest += [await reader.next() for _ in range(2)]
        assert [m.data["event_id"] for m in rest] == expected[10:] + more + tail
        async with stream(server.url, "?after=0&data=none") as reader:  # the whole log from the start
            everything = [await reader.next() for _ in range(30)]
        assert [m.data["event_id"] for m in everything[3:]] == expected + more + tail
        assert "data" not in everything[0].data


async def test_late_commit_is_delivered_not_skipped(dsn: str, store: EventStore, pool: asyncpg.Pool) -> None:
    with server_thread(settings_for(dsn)) as server:
        async with stream(server.url) as reader:
            held = await pool.acquire()
            try:
                tx = held.transaction()
                await tx.start()
                late = NewEvent("Late", {"n": 1})
                await store.append("late-stream", [late], conn=held)  # lower position, not committed yet
                early = await append(store, 1, "early-stream")
                await asyncio.sleep(0.5)  # give the stream a chance to (wrongly) deliver past the open transaction
                await tx.commit()
                store.committed(0)
            finally:
                await pool.release(held)
            got = [await reader.next() for _ in range(2)]
        assert {m.data["event_id"] for m in got} == {str(late.event_id), early[0]}
        assert got[0].data["event_id"] == str(late.event_id)  # delivery order is (tx_id, position)


async def test_heartbeats_while_idle_and_bad_resume_id(dsn: str) -> None:
    with server_thread(settings_for(dsn, sse_heartbeat_s=0.2)) as server:
        async with stream(server.url) as reader:
            assert await reader.comment() == ": heartbeat"
            assert await reader.comment() == ": heartbeat"
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            r = await client.get(f"{server.url}/events/stream", headers={"Last-Event-ID": "garbage"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"


async def test_streams_and_projections_share_one_listen_connection(
    dsn: str, store: EventStore, pool: asyncpg.Pool
) -> None:
    """The API process with its projections and three live streams: one LISTEN connection (the
    runtime's hub) wakes them all. Before: one for the streams plus one per projection."""
    with server_thread(settings_for(dsn), run_projections=True) as server:
        async with stream(server.url) as a, stream(server.url) as b, stream(server.url) as c:
            expected = await append(store, 3)
            for reader in (a, b, c):
                assert [(await reader.next()).data["event_id"] for _ in range(3)] == expected
            rows = await pool.fetch(
                """SELECT application_name, count(*) AS n FROM pg_stat_activity
                   WHERE datname = current_database() AND backend_type = 'client backend'
                   GROUP BY application_name"""
            )
    # Every other connection is a pool's (the server's or this test's): named "chronos".
    assert {r["application_name"]: r["n"] for r in rows if r["application_name"] != "chronos"} == {"chronos-hub": 1}
