"""Errors as JSON with one stable shape: ``{"error": {"code": "...", "message": "..."}}``.

Handlers turn every exception into that shape; unexpected exceptions become a 500 whose body says
nothing about the code (the traceback goes to the log only).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.api.responses import json_response
from events.errors import ChronosError, IdempotencyConflict, WrongExpectedVersion

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    431: "headers_too_large",
    502: "bad_gateway",
    503: "unavailable",
}


class ApiError(ChronosError):
    """An error answered to the client as it is (the API's own checks of a request)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_code = code
        self.headers = headers
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return json_response(error_body(code, message, **extra), status=status, headers=headers)


async def chronos_error(_request: Request, exc: Exception) -> Response:
    """Every ChronosError, in one place: its class says the status and code, its message the reason."""
    assert isinstance(exc, ChronosError)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.api_code, exc.message, exc.headers, **exc.extra)
    if exc.http_status >= 500:
        incident = str(uuid.uuid4())
        logger.error("%s (incident %s)", exc, incident, exc_info=(type(exc), exc, exc.__traceback__))
        return error_response(exc.http_status, exc.code, exc.message, incident=incident)
    if isinstance(exc, IdempotencyConflict):
        return error_response(409, exc.code, f"the Idempotency-Key was already used for different content: {exc}")
    if isinstance(exc, WrongExpectedVersion):
        return error_response(409, exc.code, f"the document changed concurrently; retry: {exc}")
    return error_response(exc.http_status, exc.code, exc.message)


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("_", " ")
    return error_response(exc.status_code, code, message, dict(exc.headers) if exc.headers else None)


async def internal_error(request: Request, exc: Exception) -> Response:
    incident = str(uuid.uuid4())
    logger.error(
        "unhandled error in %s %s (incident %s)",
        request.method,
        request.url.path,
        incident,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(500, "internal", "internal server error", incident=incident)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ChronosError: chronos_error,
    HTTPException: http_error,
    Exception: internal_error,
}
