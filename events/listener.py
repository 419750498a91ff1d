"""A LISTEN connection that survives: reconnects after a drop, and says when it (re)connected.

NOTIFY is a wake-up only; notifications sent while disconnected are lost, so ``on_connect`` runs
after every (re)connect and the caller re-reads its source of truth then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

logger = logging.getLogger(__name__)


async def wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    """Return when either event is set or the timeout passes."""
    waiters = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def listen_forever(
    dsn: str,
    channel: str,
    on_notify: Callable[[str], None],
    stop: asyncio.Event,
    *,
    on_connect: Callable[[], None] | None = None,
    name: str = "chronos-listener",
    health_interval: float = 5.0,
    reconnect_delay: float = 0.2,
) -> None:
    """LISTEN on ``channel`` until ``stop`` is set, reconnecting whenever the connection drops."""
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": name})
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await conn.add_listener(channel, lambda _c, _pid, _ch, payload: on_notify(payload))
            if on_connect is not None:
                on_connect()
            while not (lost.is_set() or stop.is_set()):
                await wait_any(lost, stop, health_interval)
                if not (lost.is_set() or stop.is_set()):
                    await conn.execute("SELECT 1")
        except (TimeoutError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            logger.info("%s lost its connection: %s", name, exc)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
        if not stop.is_set():
            await wait_any(stop, stop, reconnect_delay)
