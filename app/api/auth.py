"""Bearer tokens: required for every write, and for reads when ``CHRONOS_API_READ_AUTH=1``.

Tokens come from ``CHRONOS_API_TOKENS`` (comma-separated). The presented token is compared with
every configured token by ``hmac.compare_digest`` (constant time, no early exit), so timing says
nothing about how much of a token matched or which one.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.api.errors import ApiError

Endpoint = Callable[[Request], Awaitable[Response]]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chronos"'}


def token_ok(presented: str, tokens: tuple[str, ...]) -> bool:
    given = presented.encode()
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given, token.encode())
    return ok


def check(request: Request, *, write: bool) -> None:
    settings = request.app.state.settings
    if not write and not settings.api_read_auth:
        return
    tokens: tuple[str, ...] = settings.api_tokens
    if not tokens:
        raise ApiError(
            401,
            "unauthorized",
            "no API tokens are configured; set CHRONOS_API_TOKENS to allow this request",
            headers=_CHALLENGE,
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "unauthorized", "a bearer token is required (Authorization: Bearer …)", headers=_CHALLENGE)
    if not token_ok(presented.strip(), tokens):
        raise ApiError(403, "forbidden", "the bearer token is not valid")


def writes(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint as a write: a valid token is always required."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        check(request, write=True)
        return await endpoint(request)

    wrapper.chronos_access = "write"  # type: ignore[attr-defined]
    return wrapper


def reads(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint as a read: a token is required only when read auth is on."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        check(request, write=False)
        return await endpoint(request)

    wrapper.chronos_access = "read"  # type: ignore[attr-defined]
    return wrapper


def public(endpoint: Endpoint) -> Endpoint:
    """Health checks, the dashboard shell and the OpenAPI document: never need a token."""
    endpoint.chronos_access = "public"  # type: ignore[attr-defined]
    return endpoint
