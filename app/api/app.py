"""The Starlette application: routes, limits, error handlers, and what runs beside it.

``create_app(settings)`` opens its own runtime in the lifespan (database, pool, blob store, hub);
``create_app(runtime=rt)`` uses one the caller owns (tests). The runtime's hub wakes the live
streams (SSE) and everything running beside the API. With ``worker_slots > 0`` the back end of a
worker process (warm-up, dispatcher, projections, job runner) runs in the same process under a
supervisor; otherwise, with ``run_projections``, the projections alone keep the tables the API
reads up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.api import dashboard, directus, metrics, routes_collections, routes_documents, routes_events, routes_ops
from app.api.auth import public
from app.api.errors import EXCEPTION_HANDLERS
from app.api.limits import LimitsMiddleware
from app.api.openapi import document
from app.api.responses import json_response
from app.config import Settings
from app.runtime import Runtime, open_runtime
from app.services.tokens import TokenCache
from app.supervisor import Service, Supervisor

logger = logging.getLogger(__name__)


@public
async def openapi_json(request: Request) -> Response:
    return json_response(document())


def all_routes() -> list[BaseRoute]:
    return [
        *routes_documents.routes,
        *routes_collections.routes,
        *routes_events.routes,
        *routes_ops.routes,
        *metrics.routes,
        *directus.routes,
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *dashboard.routes,
    ]


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    worker_slots: int = 0,
    run_projections: bool = False,
    sse_poll_s: float = 1.0,
    pool_size: int = 20,
) -> Starlette:
    if runtime is not None:
        settings = runtime.settings
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            rt = runtime
            if rt is None:
                rt = await stack.enter_async_context(
                    open_runtime(settings, max_size=pool_size + max(0, worker_slots) * 3 + 6)
                )
            app.state.rt = rt
            app.state.hub = rt.hub
            app.state.stopping = asyncio.Event()
            await stack.enter_async_context(rt.hub.running())
            # The services stop as soon as the server is asked to exit (ChronosServer sets `stopping`).
            supervisor = Supervisor(_background(rt, worker_slots, run_projections))
            background = asyncio.create_task(supervisor.run(app.state.stopping), name="api-background")
            try:
                yield
            finally:
                app.state.stopping.set()  # live streams end, the services stop, then the runtime closes
                await background
                app.state.rt = None

    app = Starlette(
        routes=all_routes(),
        middleware=[Middleware(LimitsMiddleware, settings=settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = TokenCache()
    app.state.rt = None
    app.state.worker_slots = worker_slots
    app.state.sse_poll_s = sse_poll_s
    return app


def _background(rt: Runtime, worker_slots: int, run_projections: bool) -> list[Service]:
    """What runs beside the API: a worker process's back end, the projections alone, or nothing; and
    the periodic Directus sync when Directus is configured."""
    services = _back_end(rt, worker_slots, run_projections)
    settings = rt.settings
    if services and settings.directus_url and settings.directus_token and settings.directus_sync_s > 0:
        from app.services.directus import run_periodic

        async def directus_sync(stop: asyncio.Event) -> None:
            await run_periodic(rt, stop, settings.directus_sync_s)

        services.append(Service("sync:directus", directus_sync))
    return services


def _back_end(rt: Runtime, worker_slots: int, run_projections: bool) -> list[Service]:
    if worker_slots > 0:
        from app.pipeline.backend import backend_services
        from app.pipeline.worker import Worker

        worker = Worker(rt, concurrency=worker_slots, grace_s=10.0)
        logger.info("running %d in-process worker slots as %s", worker_slots, worker.owner)
        return backend_services(rt, worker)
    if run_projections:
        from app.pipeline.backend import projection_services

        return projection_services(rt)
    return []
