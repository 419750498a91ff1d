"""Request limits as plain ASGI middleware: header size/count (431) and body size (413).

The body limit is checked against ``Content-Length`` before anything is read, and again while the
body streams (chunked uploads have no length). Uploads (``POST /documents``) may be as large as
``max_upload_bytes`` (plus room for multipart framing; intake enforces the exact file limit);
every other request body is capped at ``max_body_bytes``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, error_body
from app.api.responses import dumps
from app.config import Settings

MAX_HEADERS = 100
MULTIPART_OVERHEAD = 64 * 1024
UPLOAD_PATHS = ("/documents",)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"the request body exceeds the limit of {limit} bytes")


def body_limit(settings: Settings, method: str, path: str) -> int:
    if method == "POST" and path.rstrip("/") in UPLOAD_PATHS:
        return settings.max_upload_bytes + MULTIPART_OVERHEAD
    return settings.max_body_bytes


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

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
            exact = declared > self.settings.max_upload_bytes and not _is_multipart(headers)
            if declared > limit or (limit > self.settings.max_body_bytes and exact):
                cap = self.settings.max_upload_bytes if limit > self.settings.max_body_bytes else limit
                await _answer(send, 413, "payload_too_large", f"the request body exceeds the limit of {cap} bytes")
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
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
