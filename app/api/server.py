"""uvicorn's Server, told to end live streams when shutting down, and its HTTP protocol with a
deadline for request heads.

uvicorn waits for open responses before it runs the lifespan shutdown, and an SSE response never
ends by itself; so as soon as the server is asked to exit (signal or ``should_exit``) the app's
``stopping`` event is set: streams finish their current wait and close, workers stop claiming.

uvicorn has no timeout for a request head: a connection that sends a few header bytes now and then
(slow loris) is held for ever, and 50 of them were held for a whole test. ``TimedH11Protocol`` gives
every request head ``HEAD_TIMEOUT_S`` from its first byte (or from the connection's start), then
answers 408 and closes. Stalled *bodies* are timed out by ``app.api.limits``; idle keep-alive
connections by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 20.0
"""Longest time a client may take to send a request's line and headers."""

_TIMEOUT_BODY = b'{"error":{"code":"request_timeout","message":"the request head did not arrive in time"}}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()  # a head has started (or the next one may): it gets its deadline once
        else:
            self._disarm()  # the head is in: the body and the answer have their own limits

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # between requests uvicorn's keep-alive timeout applies

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        logger.info("request head timed out", extra={"client": self.client, "timeout_s": self.head_timeout_s})
        if self.conn.our_state is h11.IDLE:  # nothing answered on this connection yet for this request
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def head_timeout_protocol(seconds: float) -> type[TimedH11Protocol]:
    """The protocol class with another head deadline (tests, operators)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"head_timeout_s": seconds})


class ChronosServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        if config.http in ("auto", "h11"):  # uvicorn's own choice has no deadline for request heads
            config.http = TimedH11Protocol
        super().__init__(config)

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if should_exit or self.should_exit:
            state = getattr(self.config.app, "state", None)
            stopping: asyncio.Event | None = getattr(state, "stopping", None)
            if stopping is not None:
                stopping.set()
        return should_exit
