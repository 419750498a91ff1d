"""Server-Sent Events for ``/events/stream``: a gap-free live tail of the log.

Each client keeps a cursor ``(tx_id, position)`` and reads with ``EventStore.read_safe`` -- the
same gap-free read the subscriptions use (see events/subscription.py), so an event whose
transaction commits late is still delivered, after the ones already sent. Every message carries
its cursor as the SSE ``id``; a client that reconnects sends it back as ``Last-Event-ID`` and
resumes exactly after it. The process's wake-up hub (events/hub.py, owned by the runtime) wakes
every client on NOTIFY; clients also poll, since a notification is only a wake-up. While idle a comment line
(``: heartbeat``) goes out every ``sse_heartbeat_s`` seconds so proxies keep the connection open
and clients can tell a quiet log from a dead connection. A token limited to some collections gets
only the events of their streams (app/services/visibility.py); the others only move its cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from app.api.common import event_json
from app.api.responses import dumps
from app.runtime import Runtime
from app.services.tokens import Principal
from app.services.visibility import visible_events
from events.hub import Hub, wait_any
from events.notifier import CHANNEL
from events.types import Cursor

BATCH = 500
RETRY_MS = 2000


def message(e_json: dict[str, object], cursor: str) -> bytes:
    return b"id: " + cursor.encode() + b"\ndata: " + dumps(e_json) + b"\n\n"


async def event_stream(
    rt: Runtime,
    hub: Hub,
    cursor: Cursor,
    *,
    principal: Principal | None = None,
    types: frozenset[str] | None,
    data: str,
    heartbeat_s: float,
    poll_s: float,
    stopping: asyncio.Event,
) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    last_sent = time.monotonic()
    while not stopping.is_set():
        woken = hub.wakeup(CHANNEL)  # before reading: a notification after the read ends the wait
        events = await rt.store.read_safe(cursor, BATCH)
        shown = {e.position for e in await visible_events(rt.pool, principal, events)}
        for e in events:
            cursor = e.cursor
            if (types is not None and e.type not in types) or e.position not in shown:
                continue
            yield message(event_json(e, data=data), str(cursor))
            last_sent = time.monotonic()
        if len(events) == BATCH:
            continue
        idle = time.monotonic() - last_sent
        if idle >= heartbeat_s:
            yield b": heartbeat\n\n"
            last_sent = time.monotonic()
            idle = 0.0
        await wait_any(max(0.01, min(poll_s, heartbeat_s - idle)), woken, stopping)
