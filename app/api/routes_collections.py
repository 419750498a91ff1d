"""``/collections``: list and create collections, and one collection's figures (docs/collections.md)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import bodies
from app.api.auth import actor_of, admin, principal_of_request, reads
from app.api.bodies import typed
from app.api.common import json_body, runtime
from app.api.responses import json_response
from app.catalogue.collections import unknown_collection, validate_collection_name
from app.services import collections as service
from app.services.visibility import collections_filter, restricted
from events.errors import InvalidRequest
from projections.collections import CollectionsProjector


@reads
async def list_collections(request: Request) -> Response:
    rt = runtime(request)
    rows = await service.listing(rt.pool, collections_filter(principal_of_request(request)))
    return json_response(typed(bodies.CollectionList, {"collections": rows}))


@admin
async def create_collection(request: Request) -> Response:
    """Creating collections is for tokens of every collection: a token limited to some gets the 404 of a
    route that does not exist (a 409 for a name already taken would tell it another collection exists)."""
    if restricted(principal_of_request(request)):
        raise HTTPException(404)
    rt = runtime(request)
    body = await json_body(request, required=True)
    unknown = sorted(set(body) - {"name", "description", "monthly_budget_usd"})
    if unknown:
        raise InvalidRequest(f"unknown field(s) {unknown}; a collection has name, description, monthly_budget_usd")
    created = await service.create(
        rt.store,
        body.get("name"),
        description=body.get("description") or "",
        monthly_budget_usd=body.get("monthly_budget_usd"),
        actor=actor_of(request),
    )
    await service.catch_up(rt.store, CollectionsProjector())  # listed as soon as the answer is back (usually)
    body = await service.created_view(rt.store, created)
    return json_response(typed(bodies.Collection, body), status=201, headers={"Location": "/collections"})


@reads
async def collection_stats(request: Request) -> Response:
    rt = runtime(request)
    name = validate_collection_name(request.path_params["collection"])  # visible: app/api/auth.py checked it
    rows = await service.stats(rt.pool, [name])
    if not rows:
        raise unknown_collection(name)
    return json_response(typed(bodies.CollectionStats, rows[0]))


routes = [
    Route("/collections", list_collections, methods=["GET"]),
    Route("/collections", create_collection, methods=["POST"]),
    Route("/collections/{collection}/stats", collection_stats, methods=["GET"]),
]
