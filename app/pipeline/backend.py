"""The back end of a process as named services: warm-up, dispatcher, projections, job runner.

``chronos worker``, ``chronos serve --with-workers N`` and ``chronos ingest --wait`` all compose
their back end here and run it under one ``app.supervisor.Supervisor``, so they start, restart and
stop the same way. Started in this order (the warm-up first, so the models load while the rest
starts) and stopped in reverse: the job runner finishes or releases its jobs first.
"""

from __future__ import annotations

import asyncio
import logging

from app.pipeline import dispatcher
from app.pipeline.stages import run_stage
from app.pipeline.warmup import warm_up
from app.pipeline.worker import Worker
from app.runtime import Runtime
from app.supervisor import Service
from events.subscription import Subscription
from projections.runner import subscriptions

logger = logging.getLogger(__name__)


def projection_services(rt: Runtime, *, poll_interval: float = 1.0) -> list[Service]:
    """The projections, and the budget alerts that follow the costs they project."""
    subs = subscriptions(rt.store, rt.blobs, hub=rt.hub, poll_interval=poll_interval)
    return [*(Service(sub.name, sub.run) for sub in subs), *budget_alert_services(rt, poll_interval=poll_interval)]


def budget_alert_services(rt: Runtime, *, poll_interval: float = 1.0) -> list[Service]:
    """The ``budget-alerts`` check after every batch of costs and, with ``CHRONOS_ALERT_WEBHOOK_URL``
    set, the delivery of what it records (app/alerts/__init__.py)."""
    from app.alerts.crossing import NAME, BudgetCheck
    from app.alerts.delivery import Deliverer

    deliverer = Deliverer(rt.store, rt.settings)
    check = BudgetCheck(rt.store, rt.settings, on_alert=deliverer.kick.set)
    sub = Subscription(rt.store, NAME, check.handle, hub=rt.hub, poll_interval=poll_interval)
    services = [Service(sub.name, sub.run)]
    if rt.settings.alert_webhook_url is not None:
        services.append(Service("budget-alert-delivery", deliverer.run))
    return services


def dispatcher_service(rt: Runtime, *, poll_interval: float = 1.0) -> Service:
    # Not durable: a job lost with its checkpoint in a crash of the server is enqueued again.
    sub = Subscription(
        rt.store, dispatcher.NAME, dispatcher.dispatch, hub=rt.hub, poll_interval=poll_interval, durable=False
    )
    return Service(sub.name, sub.run)


def warm_up_service(rt: Runtime, stages: list[str]) -> Service:
    async def warm(stop: asyncio.Event) -> None:
        loading = asyncio.ensure_future(warm_up(stages, rt.settings))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if loading.done():
            took = loading.result()
            logger.info("warmed up %s", took, extra={"action": "warm_up", "seconds": took})
        else:  # stopped first: the loading threads cannot be interrupted and finish on their own
            loading.cancel()

    return Service("warm-up", warm, once=True)


def backend_services(
    rt: Runtime, worker: Worker, *, projections: bool = True, warm: bool | None = None
) -> list[Service]:
    """Everything a worker process runs. ``warm``: load converter, chunker and embedder at start,
    concurrently (default: when the worker runs the real stages)."""
    services: list[Service] = []
    if (worker.runner is run_stage) if warm is None else warm:
        services.append(warm_up_service(rt, worker.stages))
    services.append(dispatcher_service(rt, poll_interval=worker.poll_interval))
    if projections:
        services.extend(projection_services(rt))
    services.append(Service("jobs", worker.run, stop_timeout=worker.grace_s + 10))
    return services
