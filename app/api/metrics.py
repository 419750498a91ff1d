"""``/metrics``: Prometheus exposition by ``prometheus_client``, computed from SQL at scrape time.

Everything is derived from the log and the tables (nothing is counted in process memory), so any
number of API processes report the same figures and a restart loses nothing. The usual pattern for
that is a custom Collector that reads the source when scraped; the database is read asynchronously
first (one read-only snapshot), then a Collector over that snapshot is exposed through a registry of
its own with the library's encoder, chosen from the Accept header (text 0.0.4 by default, OpenMetrics
when asked), and the library's content type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.alerts.state import recent_alerts
from app.api.auth import principal_of_request, reads
from app.api.common import runtime
from app.config import Settings
from app.services.budget import month_to_date
from app.services.visibility import restricted
from events.sqlfiles import query
from events.types import DbConn

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read, in one read-only transaction."""

    events: list[asyncpg.Record]
    head: int
    documents: list[asyncpg.Record]
    jobs: list[asyncpg.Record]
    failures: list[asyncpg.Record]
    durations: list[asyncpg.Record]
    spend: list[asyncpg.Record]
    spent_month_usd: float
    budget_month_usd: float
    workers: int
    alerts: list[tuple[int, str]]  # this month's budget alerts: (threshold_pct, delivery)


async def read_snapshot(conn: DbConn, settings: Settings) -> Snapshot:
    month = await month_to_date(conn, settings)  # the one budget rule (chronos costs, GET /costs)
    workers = await conn.fetchrow(query("api", "workers_connected"))
    assert workers is not None
    alerts = await recent_alerts(conn)
    return Snapshot(
        events=await conn.fetch(query("api", "metrics_events")),
        head=int(await conn.fetchval(query("api", "metrics_head")) or 0),
        documents=await conn.fetch(query("api", "metrics_documents")),
        jobs=await conn.fetch(query("api", "metrics_jobs")),
        failures=await conn.fetch(query("api", "metrics_failures")),
        durations=await conn.fetch(query("api", "metrics_stage_durations"), list(DURATION_BUCKETS)),
        spend=await conn.fetch(query("api", "metrics_spend")),
        spent_month_usd=float(month.spent_usd),
        budget_month_usd=float(month.budget_usd),
        workers=int(workers["n"]),
        alerts=[(a.crossed.threshold_pct, a.status) for a in alerts if a.crossed.month == month.month[:7]],
    )


class ChronosCollector(Collector):
    """The Chronos metric families over one snapshot (names and labels are a public contract)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        yield _counter("chronos_events_appended", "Events in the log, by type.", ["type"],
                       [((r["type"],), r["n"]) for r in s.events])  # fmt: skip
        yield _gauge("chronos_event_log_head_position", "Highest position in the log.", [], [((), s.head)])
        yield _gauge("chronos_documents", "Documents by status (documents projection).", ["status"],
                     [((r["status"],), r["n"]) for r in s.documents])  # fmt: skip
        yield _gauge("chronos_jobs", "Stage jobs by stage and status; queued is the queue depth.",
                     ["stage", "status"], [((r["stage"], r["status"]), r["n"]) for r in s.jobs])  # fmt: skip
        failures = [((r["stage"], r["error_class"], str(r["final"]).lower()), r["n"]) for r in s.failures]
        yield _counter("chronos_stage_failures", "Stage failure events (final: no more attempts).",
                       ["stage", "error_class", "final"], failures)  # fmt: skip
        yield _histogram(s.durations)
        yield _counter("chronos_spend_usd", "USD recorded in the cost ledger, by stage and provider.",
                       ["stage", "provider"], [((r["stage"], r["provider"]), r["usd"]) for r in s.spend])  # fmt: skip
        yield _gauge("chronos_spend_month_usd", "USD spent this calendar month.", [], [((), s.spent_month_usd)])
        yield _gauge("chronos_budget_month_usd", "The monthly budget in USD (app/services/budget.py, as in chronos "
                     "costs).", [], [((), s.budget_month_usd)])  # fmt: skip
        yield _gauge("chronos_budget_alerts", "This month's budget alerts (80 / 100 % of the budget crossed) by "
                     "delivery state (delivered, failed, pending): docs/costs.md.", ["threshold_pct", "delivery"],
                     [((pct, delivery), 1) for pct, delivery in s.alerts])  # fmt: skip
        yield _gauge("chronos_workers_connected", "Stage workers connected to the database.", [], [((), s.workers)])


Samples = list[tuple[tuple[Any, ...], Any]]


def _counter(name: str, doc: str, labels: list[str], samples: Samples) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric([str(v) for v in values], float(value))
    return family


def _gauge(name: str, doc: str, labels: list[str], samples: Samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric([str(v) for v in values], float(value))
    return family


def _histogram(rows: list[asyncpg.Record]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "chronos_stage_duration_seconds",
        "Seconds from a stage's trigger (upload, request or previous result) to its result.",
        labels=["stage"],
    )
    by_stage: dict[str, dict[int, tuple[int, float]]] = {}
    for r in rows:
        by_stage.setdefault(r["stage"], {})[int(r["bucket"])] = (int(r["n"]), float(r["total_s"] or 0))
    for stage, buckets in sorted(by_stage.items()):
        cumulative = 0
        series: list[tuple[str, float]] = []
        for i, le in enumerate(DURATION_BUCKETS):
            # width_bucket: bucket i holds latencies in [bounds[i-1], bounds[i]).
            cumulative += buckets.get(i, (0, 0.0))[0]
            series.append((floatToGoString(le), float(cumulative)))
        series.append(("+Inf", float(sum(n for n, _ in buckets.values()))))
        family.add_metric([stage], series, sum(total for _, total in buckets.values()))
    return family


@reads
async def metrics(request: Request) -> Response:
    """Service-wide figures (every collection's documents and spend): a token limited to some
    collections gets the 404 of a route that does not exist."""
    if restricted(principal_of_request(request)):
        raise HTTPException(404)
    rt = runtime(request)
    async with rt.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        snap = await read_snapshot(conn, rt.settings)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChronosCollector(snap))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


routes = [Route("/metrics", metrics, methods=["GET"])]
