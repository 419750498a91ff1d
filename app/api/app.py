"""The Starlette application: routes, limits, error handlers, and what runs beside it.

``create_app(settings)`` opens its own runtime in the lifespan (database, pool, blob store);
``create_app(runtime=rt)`` uses one the caller owns (tests). With ``worker_slots > 0`` stage
workers (with the dispatcher and projections) run in the same process; otherwise, with
``run_projections``, the projections alone keep the tables the API reads up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.api import dashboard, directus, metrics, routes_documents, routes_events, routes_ops
from app.api.auth import public
from app.api.errors import EXCEPTION_HANDLERS
from app.api.limits import LimitsMiddleware
from app.api.openapi import document
from app.api.responses import json_response
from app.api.sse import Hub
from app.config import Settings
from app.runtime import Runtime, open_runtime
from app.services.tokens import TokenCache

logger = logging.getLogger(__name__)


@public
async def openapi_json(request: Request) -> Response:
    return json_response(document())


def all_routes() -> list[BaseRoute]:
    return [
        *routes_documents.routes,
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
            stop = asyncio.Event()
            app.state.rt = rt
            app.state.hub = Hub(rt.dsn)
            app.state.stopping = stop
            background = _background(rt, stop, worker_slots, run_projections)
            try:
                yield
            finally:
                stop.set()
                await app.state.hub.close()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.wait_for(task, timeout=60)
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


def _background(rt: Runtime, stop: asyncio.Event, worker_slots: int, run_projections: bool) -> list[asyncio.Task[Any]]:
    if worker_slots > 0:
        from app.pipeline.worker import Worker

        worker = Worker(rt, concurrency=worker_slots, grace_s=10.0)
        logger.info("running %d in-process worker slots as %s", worker_slots, worker.owner)
        return [asyncio.create_task(worker.run(stop), name="api-worker")]
    if run_projections:
        from projections.runner import run_projections as run

        return [asyncio.create_task(run(rt, rt.dsn, stop), name="api-projections")]
    return []
