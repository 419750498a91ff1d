"""Bearer tokens with scopes: ``read`` < ``write`` < ``admin`` (app/services/tokens.py).

* Writes (uploads, requests for free stages, the Directus hook) need ``write``; deleting documents and
  reprocessing with paid stages need ``admin``; reads need ``read`` when ``CHRONOS_API_READ_AUTH=1``
  and nothing otherwise; health checks, the dashboard shell and the OpenAPI document never need one.
* A token is one of ``CHRONOS_API_TOKENS`` (the bootstrap, admin; compared in constant time) or one
  made by ``chronos tokens create`` (looked up by its sha256; a revoked one stops working within
  ``tokens.CACHE_S`` seconds).
* The request's principal is kept in ``request.state.principal``; the events a request appends carry
  it as their actor.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.api.errors import ApiError
from app.catalogue.events import Scope
from app.services.tokens import Principal, TokenCache, bootstrap_principal

Endpoint = Callable[[Request], Awaitable[Response]]
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chronos"'}


def token_ok(presented: str, tokens: tuple[str, ...]) -> bool:
    return bootstrap_principal(presented, tokens) is not None


async def principal_of(request: Request) -> Principal | None:
    """The request's valid principal, if it presents a bearer token (ApiError 403 for a bad one)."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return None
    settings = request.app.state.settings
    found = bootstrap_principal(presented, settings.api_tokens)
    if found is None:
        cache: TokenCache = request.app.state.tokens
        rt = getattr(request.app.state, "rt", None)
        if rt is not None:
            found = await cache.lookup(rt.pool, presented)
    if found is None:
        raise ApiError(403, "forbidden", "the bearer token is not valid (unknown or revoked)")
    return found


async def require(request: Request, needed: Scope) -> Principal:
    """The request's principal, which must hold ``needed`` (401 without a token, 403 below the scope)."""
    principal = getattr(request.state, "principal", None) or await principal_of(request)
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer …): make one with `chronos tokens create`, or set "
            "CHRONOS_API_TOKENS",
            headers=_CHALLENGE,
        )
    request.state.principal = principal
    if not principal.allows(needed):
        raise ApiError(
            403, "insufficient_scope", f"this needs a token with the {needed} scope; yours has {principal.scope}"
        )
    return principal


def actor_of(request: Request) -> str:
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal.actor if principal is not None else "api"


def _guarded(endpoint: Endpoint, needed: Scope, access: str) -> Endpoint:
    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        if needed == "read" and not request.app.state.settings.api_read_auth:
            try:
                request.state.principal = await principal_of(request)  # optional: named when given
            except ApiError:
                request.state.principal = None
        else:
            await require(request, needed)
        return await endpoint(request)

    wrapper.chronos_access = access  # type: ignore[attr-defined]
    return wrapper


def reads(endpoint: Endpoint) -> Endpoint:
    """A read: a ``read`` token is required only when read auth is on."""
    return _guarded(endpoint, "read", "read")


def writes(endpoint: Endpoint) -> Endpoint:
    """A write: a token with the ``write`` scope is always required."""
    return _guarded(endpoint, "write", "write")


def admin(endpoint: Endpoint) -> Endpoint:
    """Deleting or paying: a token with the ``admin`` scope."""
    return _guarded(endpoint, "admin", "admin")


def public(endpoint: Endpoint) -> Endpoint:
    """Health checks, the dashboard shell and the OpenAPI document: never need a token."""
    endpoint.chronos_access = "public"  # type: ignore[attr-defined]
    return endpoint
