"""One LISTEN connection per process, waking any number of waiters on any number of channels.

NOTIFY is a wake-up, never a delivery: payloads are ignored, and notifications sent while the
connection is down are lost. So on every (re)connect the hub wakes every waiter, and every waiter
re-reads its source of truth (a checkpoint, the job queue, a cursor) after each wake-up -- and also
on its own poll interval, because a wake-up can always be missed.

A waiter takes a wake-up token *before* it reads, then waits on it::

    woken = hub.wakeup("chronos_events")     # before reading
    ... read from the table ...
    await wait_any(poll_interval, woken, stop)

A notification that arrives after ``wakeup()`` sets that token, so a notification that lands
between the read and the wait is never slept through. Tokens cost nothing to drop: a waiter that
goes away (an SSE client that disconnects) leaves nothing registered.

The connection is up while at least one user is inside ``async with hub.running():`` (the
subscriptions, the job runner, the API's lifespan) and is closed when the last one leaves, so a
process that never waits opens no LISTEN connection. It is health-checked every
``health_interval`` seconds (a dead peer is noticed even without a TCP reset) and re-opened after a
short, growing delay; the hub never gives up while it is in use.

The connection's ``application_name`` is the hub's ``name``; ``rename()`` changes it (a process
running stage workers names it after them, which is how ``/readyz`` counts connected workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable

import asyncpg

from events.connection import connect

logger = logging.getLogger(__name__)

_LOST = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def wait_any(timeout: float, *events: asyncio.Event) -> None:
    """Return when any of ``events`` is set or ``timeout`` seconds have passed."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class Hub:
    """Fans NOTIFY wake-ups out from one LISTEN connection to every waiter of this process."""

    def __init__(
        self,
        dsn: str,
        *,
        channels: Iterable[str] = (),
        name: str = "chronos-hub",
        health_interval: float = 5.0,
        reconnect_delay: float = 0.2,
        max_reconnect_delay: float = 5.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.name = name  # the connection's application_name
        self.health_interval = health_interval
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.connect_timeout = connect_timeout
        self.connected = asyncio.Event()
        self.connects = 0
        self.notifications = 0
        self._channels: set[str] = set(channels)
        self._changed = asyncio.Event()  # a channel was added, or the name changed, while connected
        self._tokens: dict[str, asyncio.Event] = {}
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def reconnects(self) -> int:
        """Connections opened after the first one (each followed by waking everyone)."""
        return max(0, self.connects - 1)

    def wakeup(self, channel: str) -> asyncio.Event:
        """The token that the next notification on ``channel`` (or the next reconnect) sets.
        Take it before reading; a channel not listened on yet is added."""
        if channel not in self._channels:
            self._channels.add(channel)
            self._changed.set()
        token = self._tokens.get(channel)
        if token is None:
            token = self._tokens[channel] = asyncio.Event()
        return token

    def rename(self, name: str) -> None:
        """Change the connection's application_name (applied at once when connected, and on reconnects)."""
        self.name = name
        self._changed.set()

    def wake(self, channel: str | None = None) -> None:
        """Wake the waiters of ``channel`` (every channel when None)."""
        for ch in [channel] if channel is not None else list(self._tokens):
            token = self._tokens.pop(ch, None)
            if token is not None:
                token.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        """Keep the LISTEN connection up while the block runs (shared by every user)."""
        if self._closed:
            raise RuntimeError(f"the wake-up hub {self.name} is closed; open a new runtime")
        self._users += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name=self.name)
        try:
            yield self
        finally:
            self._users -= 1
            if self._users == 0:
                await self._stop()

    async def close(self) -> None:
        """Close the connection now, whoever still uses it (they fall back to polling)."""
        self._closed = True
        await self._stop()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self) -> None:
        """Connect, serve until the connection is lost, wait a little, again; until cancelled."""
        delay = self.reconnect_delay
        while True:
            started, named = time.monotonic(), self.name
            try:
                conn = await connect(
                    self.dsn, server_settings={"application_name": named}, timeout=self.connect_timeout
                )
            except Exception as exc:  # unreachable, restarting, refusing: try again, never die
                logger.warning(
                    "%s could not connect: %s; retrying in %.1fs",
                    self.name,
                    exc,
                    delay,
                    extra={"action": "listen", "hub": self.name, "error": str(exc)},
                )
            else:
                try:
                    await self._serve(conn, named)
                except _LOST as exc:
                    reason = str(exc) or type(exc).__name__  # a health check that timed out says nothing
                    logger.warning(
                        "%s lost its connection: %s",
                        self.name,
                        reason,
                        extra={"action": "listen", "hub": self.name, "error": reason},
                    )
                except Exception as exc:
                    logger.error("%s failed: %s", self.name, exc, exc_info=True, extra={"hub": self.name})
                finally:
                    self.connected.clear()
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
                if time.monotonic() - started > self.max_reconnect_delay * 2:
                    delay = self.reconnect_delay  # it had been up for a while: reconnect soon
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    async def _serve(self, conn: asyncpg.Connection, named: str) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        listening: set[str] = set()
        while True:
            self._changed.clear()
            if named != self.name:
                named = self.name
                await conn.execute("SELECT set_config('application_name', $1, false)", named)
            for channel in sorted(self._channels - listening):  # added meanwhile: _changed is set again
                await conn.add_listener(channel, self._on_notify)
                listening.add(channel)
                if self.connected.is_set():
                    self.wake(channel)  # its waiters may have missed something before LISTEN
            if not self.connected.is_set():
                self.connects += 1
                self.connected.set()
                logger.info(
                    "%s listening on %s",
                    self.name,
                    ", ".join(sorted(listening)),
                    extra={"action": "listen", "hub": self.name, "connects": self.connects},
                )
                self.wake()  # notifications sent while disconnected are lost: everyone re-reads
            await wait_any(self.health_interval, lost, self._changed)
            if lost.is_set():
                raise ConnectionResetError("the server closed the LISTEN connection")
            await conn.execute("SELECT 1", timeout=self.health_interval)  # notice a dead peer

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: object) -> None:
        self.notifications += 1
        self.wake(channel)
