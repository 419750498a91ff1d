"""Request limits as plain ASGI middleware: header size/count (431), body size (413), a stalled
body (408) and a client that goes away mid-body.

The body limit is checked against ``Content-Length`` before anything is read, and again while the
body streams (chunked uploads have no length). Uploads (``POST /documents``) may be as large as
``max_upload_bytes`` (plus room for multipart framing; intake enforces the exact file limit);
every other request body is capped at ``max_body_bytes``. Every 413 states the limit the operator
set (``CHRONOS_MAX_UPLOAD_BYTES`` or ``CHRONOS_API_MAX_BODY_BYTES``), never the internal allowance.

A body that sends nothing for ``body_timeout_s`` (a slow-loris upload) ends in 408 and the connection
is closed. A client that disconnects before its body is complete raises ``ClientGone``: the request
ends quietly (one info line), instead of an "internal error" with tracebacks. Slow request *heads*
are timed out by the server (``app.api.server``).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, error_body
from app.api.responses import dumps
from app.config import Settings

logger = logging.getLogger(__name__)

MAX_HEADERS = 100
MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_PATHS = ("/documents",)
BODY_TIMEOUT_S = 30.0
"""Longest wait for the next piece of a request body before the request ends in 408."""


class BodyTooLarge(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(413, "payload_too_large", message, headers={"Connection": "close"})


class BodyTimeout(ApiError):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, "request_timeout", f"the request body stalled: nothing arrived for {seconds:g} s",
                         headers={"Connection": "close"})  # fmt: skip


class ClientGone(ApiError):
    """The client disconnected before its request body was complete; nobody reads the answer."""

    def __init__(self) -> None:
        super().__init__(400, "client_disconnected", "the client disconnected before the request body was complete")


def is_upload(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/") in UPLOAD_PATHS


def body_limit(settings: Settings, method: str, path: str) -> int:
    if is_upload(method, path):
        return settings.max_upload_bytes + MULTIPART_OVERHEAD
    return settings.max_body_bytes


def too_large(settings: Settings, method: str, path: str) -> str:
    """The 413 message: the limit the operator configured for this kind of request."""
    if is_upload(method, path):
        return f"the upload exceeds the limit of {settings.max_upload_bytes} bytes (CHRONOS_MAX_UPLOAD_BYTES)"
    return f"the request body exceeds the limit of {settings.max_body_bytes} bytes (CHRONOS_API_MAX_BODY_BYTES)"


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, body_timeout_s: float | None = None) -> None:
        self.app = app
        self.settings = settings
        self.body_timeout_s = BODY_TIMEOUT_S if body_timeout_s is None else body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > self.settings.max_header_bytes or len(headers) > MAX_HEADERS:
            await _answer(
                send,
                431,
                "headers_too_large",
                f"request headers exceed {self.settings.max_header_bytes} bytes or {MAX_HEADERS} fields",
            )
            return
        limit = body_limit(self.settings, scope["method"], scope["path"])
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None:
            if not length.strip().isdigit():
                await _answer(send, 400, "bad_request", "Content-Length is not a number")
                return
            declared = int(length)
            upload = is_upload(scope["method"], scope["path"])
            exact = upload and declared > self.settings.max_upload_bytes and not _is_multipart(headers)
            if declared > limit or exact:
                await _answer(send, 413, "payload_too_large", too_large(self.settings, scope["method"], scope["path"]))
                return
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is the wait for a disconnect (streaming answers)
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                logger.info("request body stalled", extra={"path": scope["path"], "received": received,
                                                           "timeout_s": self.body_timeout_s})  # fmt: skip
                raise BodyTimeout(self.body_timeout_s) from None
            if message["type"] == "http.disconnect":
                logger.info("client disconnected mid-request", extra={"path": scope["path"], "received": received})
                raise ClientGone()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large(self.settings, scope["method"], scope["path"]))
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)


def _is_multipart(headers: list[tuple[bytes, bytes]]) -> bool:
    content_type = next((v for k, v in headers if k == b"content-type"), b"")
    return content_type.lower().startswith(b"multipart/")


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = dumps(error_body(code, message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
