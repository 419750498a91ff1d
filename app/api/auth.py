"""Bearer tokens with scopes: ``read`` < ``write`` < ``admin`` (app/services/tokens.py).

* Writes (uploads, requests for free stages, the Directus hook) need ``write``; deleting documents and
  reprocessing with paid stages need ``admin``; reads need ``read`` when ``CHRONOS_API_READ_AUTH=1``
  and nothing otherwise; health checks, the dashboard shell and the OpenAPI document never need one.
* A token is one of ``CHRONOS_API_TOKENS`` (the bootstrap, admin; compared in constant time) or one
  made by ``chronos tokens create`` (looked up by its sha256; a revoked one stops working within
  ``tokens.CACHE_S`` seconds).
* The request's principal is kept in ``request.state.principal``; the events a request appends carry
  it as their actor.
* Collections (app/services/visibility.py): before any guarded endpoint runs, a ``{document_id}`` or
  ``{collection}`` in its path is checked against the principal's collections, so a token of collection
  A gets the same 404 for a document of B as for one that does not exist, on every route — including
  routes added later. Listings, search, costs and the event feeds filter with
  ``visibility.collections_filter(principal_of_request(request))``. 403 stays for a scope too low on
  something the token may see.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.api.errors import ApiError
from app.catalogue.events import Scope
from app.services import visibility
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


async def authenticate(request: Request) -> Principal:
    """The request's principal (401 without a token, 403 for an unknown or revoked one)."""
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
    return principal


async def require(request: Request, needed: Scope) -> Principal:
    """The request's principal, which must hold ``needed`` (401 without a token, 403 below the scope)."""
    principal = await authenticate(request)
    if not principal.allows(needed):
        raise ApiError(
            403, "insufficient_scope", f"this needs a token with the {needed} scope; yours has {principal.scope}"
        )
    return principal


def principal_of_request(request: Request) -> Principal | None:
    """The principal a guarded endpoint runs as (None: an anonymous read while read auth is off)."""
    return getattr(request.state, "principal", None)


async def check_path_visible(request: Request) -> None:
    """404 (as if absent) for a ``{document_id}`` or ``{collection}`` of a collection the principal may
    not see. An id that is not a UUID is left to the endpoint (400)."""
    principal = principal_of_request(request)
    if not visibility.restricted(principal):
        return
    params = request.path_params
    if "collection" in params:
        visibility.visible_collection(principal, str(params["collection"]))
    raw = params.get("document_id")
    if raw is None:
        return
    try:
        doc = str(uuid.UUID(str(raw)))
    except ValueError:
        return
    rt = getattr(request.app.state, "rt", None)
    if rt is None:
        raise ApiError(503, "unavailable", "the service is starting or stopping")
    await visibility.visible_document(rt.pool, principal, doc)


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
            await check_path_visible(request)
        else:
            await authenticate(request)
            await check_path_visible(request)  # 404 for what the token may not see, before any 403
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
