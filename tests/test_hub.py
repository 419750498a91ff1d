"""The wake-up hub: one LISTEN connection, fan-out, wake everyone on (re)connect, health check, never
dies, open only while in use -- and the only LISTEN loop in the code base."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from app.db import with_database
from events.hub import Hub

ROOT = Path(__file__).resolve().parent.parent


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


async def hub_connections(pool: asyncpg.Pool, name: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))


async def notify(pool: asyncpg.Pool, channel: str) -> None:
    await pool.execute("SELECT pg_notify($1, 'x')", channel)


async def test_one_notification_wakes_every_waiter_of_its_channel_only(dsn: str, pool: asyncpg.Pool) -> None:
    hub = Hub(dsn, channels=("events_a", "jobs_b"), name="hub-fanout")
    async with hub.running():
        await asyncio.wait_for(hub.connected.wait(), 10)
        tokens_a = [hub.wakeup("events_a") for _ in range(50)]
        token_b = hub.wakeup("jobs_b")
        assert not any(t.is_set() for t in tokens_a)
        await notify(pool, "events_a")
        await eventually(lambda: all(t.is_set() for t in tokens_a))
        assert not token_b.is_set()  # another channel's waiters sleep on
        assert not hub.wakeup("events_a").is_set()  # a token taken after the wake-up waits for the next one
        await notify(pool, "jobs_b")
        await eventually(token_b.is_set)
        assert await hub_connections(pool, "hub-fanout") == 1  # both channels, one connection


async def test_reconnect_wakes_everyone_and_listens_again(dsn: str, pool: asyncpg.Pool) -> None:
    hub = Hub(dsn, channels=("events_a", "jobs_b"), name="hub-reconnect", reconnect_delay=0.05)
    async with hub.running():
        await asyncio.wait_for(hub.connected.wait(), 10)
        tokens = [hub.wakeup("events_a"), hub.wakeup("jobs_b")]
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'hub-reconnect'"
        )
        assert killed == 1
        # Nobody notified: the reconnect itself wakes every waiter (what was sent meanwhile is lost).
        await eventually(lambda: all(t.is_set() for t in tokens))
        await eventually(lambda: hub.connected.is_set() and hub.reconnects == 1)
        token = hub.wakeup("jobs_b")
        await notify(pool, "jobs_b")  # the new connection LISTENs on every channel again
        await eventually(token.is_set)
        assert await hub_connections(pool, "hub-reconnect") == 1


async def test_connection_is_open_only_while_in_use(dsn: str, pool: asyncpg.Pool) -> None:
    hub = Hub(dsn, name="hub-users")
    assert await hub_connections(pool, "hub-users") == 0
    async with hub.running():
        await asyncio.wait_for(hub.connected.wait(), 10)
        async with hub.running():  # a second user shares the connection
            assert await hub_connections(pool, "hub-users") == 1
        assert hub.connected.is_set()  # one user is left
        assert await hub_connections(pool, "hub-users") == 1
    assert not hub.connected.is_set()
    await eventually_count(pool, "hub-users", 0)
    await hub.close()
    with pytest.raises(RuntimeError, match="closed"):
        async with hub.running():
            raise AssertionError("a closed hub must refuse to run")


async def eventually_count(pool: asyncpg.Pool, name: str, expected: int) -> None:
    deadline = time.monotonic() + 10
    while (n := await hub_connections(pool, name)) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"{n} connections named {name}, expected {expected}")
        await asyncio.sleep(0.02)


async def test_a_channel_asked_for_while_connected_is_listened_on(dsn: str, pool: asyncpg.Pool) -> None:
    hub = Hub(dsn, channels=("events_a",), name="hub-new-channel")
    async with hub.running():
        await asyncio.wait_for(hub.connected.wait(), 10)
        first = hub.wakeup("late_channel")
        # Its waiters are woken once the LISTEN is in place (they may have missed something before).
        await eventually(first.is_set)
        token = hub.wakeup("late_channel")
        await notify(pool, "late_channel")
        await eventually(token.is_set)
        assert hub.reconnects == 0  # no new connection for it


async def test_a_rename_reaches_the_connection_and_survives_a_reconnect(dsn: str, pool: asyncpg.Pool) -> None:
    hub = Hub(dsn, name="hub-before", reconnect_delay=0.05)
    async with hub.running():
        hub.rename("hub-after")  # possibly while it is still connecting under the old name
        await asyncio.wait_for(hub.connected.wait(), 10)
        await eventually_count(pool, "hub-after", 1)
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hub-after'"
        )
        await eventually(lambda: hub.reconnects == 1 and hub.connected.is_set())
        await eventually_count(pool, "hub-after", 1)
        assert await hub_connections(pool, "hub-before") == 0


async def test_keeps_trying_until_the_database_answers(
    pg_admin_dsn: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"chronos_hub_{uuid.uuid4().hex[:8]}"
    hub = Hub(with_database(pg_admin_dsn, name), name="hub-patient", reconnect_delay=0.05, max_reconnect_delay=0.2)
    caplog.set_level(logging.WARNING, logger="events.hub")
    try:
        async with hub.running():
            await eventually(lambda: sum("could not connect" in r.getMessage() for r in caplog.records) >= 3)
            assert not hub.connected.is_set()
            await pool.execute(f'CREATE DATABASE "{name}"')  # the database comes up
            await asyncio.wait_for(hub.connected.wait(), 10)
            assert hub.connects == 1
    finally:
        await pool.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    record = next(r for r in caplog.records if "could not connect" in r.getMessage())
    assert "hub-patient" in record.getMessage() and getattr(record, "hub", None) == "hub-patient"


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class FreezingProxy:
    """A TCP proxy in front of the test server that can stop passing bytes on the connections it
    already carries, without closing them: a peer that went silent (no reset, no FIN)."""

    def __init__(self) -> None:
        self.frozen: list[asyncio.Event] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: list[asyncio.Task[object]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, open_upstream: Callable[[], Awaitable[Streams]]) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.handlers.append(task)
            up_reader, up_writer = await open_upstream()
            self.writers += [writer, up_writer]
            frozen = asyncio.Event()
            self.frozen.append(frozen)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    while data := await src.read(65536):
                        if frozen.is_set():
                            return  # swallow: the bytes never arrive, the socket stays open
                        dst.write(data)
                        await dst.drain()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def freeze_existing(self) -> None:
        for f in self.frozen:
            f.set()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def proxy_dsn(dsn: str, pool: asyncpg.Pool) -> AsyncIterator[tuple[str, FreezingProxy]]:
    row = await pool.fetchrow(
        "SELECT inet_server_addr()::text AS addr, inet_server_port() AS port, "
        "current_setting('unix_socket_directories') AS sockets, current_setting('port') AS unix_port"
    )
    assert row is not None
    if row["addr"] is None:  # connected over a Unix socket
        path = f"{row['sockets'].split(',')[0].strip()}/.s.PGSQL.{row['unix_port']}"

        def open_upstream() -> Awaitable[Streams]:
            return asyncio.open_unix_connection(path)
    else:
        host, port = re.sub(r"/\d+$", "", row["addr"]), row["port"]

        def open_upstream() -> Awaitable[Streams]:
            return asyncio.open_connection(host, port)

    proxy = FreezingProxy()
    await proxy.start(open_upstream)
    parts = urlsplit(dsn)
    auth = quote(parts.username or "postgres") + (f":{quote(parts.password)}" if parts.password else "")
    try:
        yield f"postgresql://{auth}@127.0.0.1:{proxy.port}{parts.path}?sslmode=disable", proxy
    finally:
        await proxy.close()


async def test_health_check_notices_a_silent_peer(dsn: str, pool: asyncpg.Pool) -> None:
    """No reset, no FIN, no notification: only the health check can tell the connection is dead."""
    async with proxy_dsn(dsn, pool) as (via_proxy, proxy):
        hub = Hub(via_proxy, channels=("events_a",), name="hub-silent", health_interval=0.3, reconnect_delay=0.05)
        async with hub.running():
            await asyncio.wait_for(hub.connected.wait(), 10)
            token = hub.wakeup("events_a")
            proxy.freeze_existing()
            await eventually(lambda: hub.reconnects == 1 and hub.connected.is_set())
            assert token.is_set()  # woken by the reconnect
            token = hub.wakeup("events_a")
            await notify(pool, "events_a")  # and the new connection (through the proxy) works
            await eventually(token.is_set)


def test_the_hub_is_the_only_listen_loop() -> None:
    """No copy of the LISTEN/reconnect loop is left anywhere in the shipped packages."""
    listeners = sorted(
        str(path.relative_to(ROOT))
        for package in ("app", "events", "projections")
        for path in (ROOT / package).rglob("*.py")
        if "add_listener(" in path.read_text()
    )
    assert listeners == ["events/hub.py"]
    assert not (ROOT / "events" / "listener.py").exists()
