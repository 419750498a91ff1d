"""``/metrics``: Prometheus text exposition, computed from SQL at scrape time.

Everything is derived from the log and the tables (nothing is counted in process memory), so any
number of API processes report the same figures and a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.auth import reads
from app.api.common import runtime
from events.sqlfiles import query

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _num(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return repr(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[str, dict[str, object], object]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(**labels)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@reads
async def metrics(request: Request) -> Response:
    rt = runtime(request)
    out = Exposition()
    async with rt.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        events = await conn.fetch(query("api", "metrics_events"))
        head = await conn.fetchval(query("api", "metrics_head"))
        documents = await conn.fetch(query("api", "metrics_documents"))
        jobs = await conn.fetch(query("api", "metrics_jobs"))
        failures = await conn.fetch(query("api", "metrics_failures"))
        durations = await conn.fetch(query("api", "metrics_stage_durations"), list(DURATION_BUCKETS))
        spend = await conn.fetch(query("api", "metrics_spend"))
        budget = await conn.fetchrow(query("api", "budget"))
        workers = await conn.fetchrow(query("api", "workers_connected"))
    out.family(
        "chronos_events_appended_total",
        "counter",
        "Events in the log, by type.",
        [("", {"type": r["type"]}, r["n"]) for r in events],
    )
    out.family("chronos_event_log_head_position", "gauge", "Highest position in the log.", [("", {}, head)])
    out.family(
        "chronos_documents",
        "gauge",
        "Documents by status (documents projection).",
        [("", {"status": r["status"]}, r["n"]) for r in documents],
    )
    out.family(
        "chronos_jobs",
        "gauge",
        "Stage jobs by stage and status; queued is the queue depth.",
        [("", {"stage": r["stage"], "status": r["status"]}, r["n"]) for r in jobs],
    )
    out.family(
        "chronos_stage_failures_total",
        "counter",
        "Stage failure events (final: no more attempts).",
        [
            ("", {"stage": r["stage"], "error_class": r["error_class"], "final": str(r["final"]).lower()}, r["n"])
            for r in failures
        ],
    )
    out.family(
        "chronos_stage_duration_seconds",
        "histogram",
        "Seconds from a stage's trigger (upload, request or previous result) to its result.",
        _histogram(durations),
    )
    out.family(
        "chronos_spend_usd_total",
        "counter",
        "USD recorded in the cost ledger, by stage and provider.",
        [("", {"stage": r["stage"], "provider": r["provider"]}, r["usd"]) for r in spend],
    )
    assert budget is not None and workers is not None
    out.family("chronos_spend_month_usd", "gauge", "USD spent this calendar month.", [("", {}, budget["spent_usd"])])
    out.family("chronos_budget_month_usd", "gauge", "The monthly budget in USD.", [("", {}, budget["budget_usd"])])
    out.family(
        "chronos_workers_connected", "gauge", "Stage workers connected to the database.", [("", {}, workers["n"])]
    )
    return Response(out.text(), media_type=CONTENT_TYPE)


def _histogram(rows: list[asyncpg.Record]) -> list[tuple[str, dict[str, object], object]]:
    by_stage: dict[str, dict[int, tuple[int, float]]] = {}
    for r in rows:
        by_stage.setdefault(r["stage"], {})[int(r["bucket"])] = (int(r["n"]), float(r["total_s"] or 0))
    samples: list[tuple[str, dict[str, object], object]] = []
    for stage, buckets in sorted(by_stage.items()):
        cumulative = 0
        for i, le in enumerate(DURATION_BUCKETS):
            # width_bucket: bucket i holds latencies in [bounds[i-1], bounds[i]).
            cumulative += buckets.get(i, (0, 0.0))[0]
            samples.append(("_bucket", {"stage": stage, "le": _num(le)}, cumulative))
        count = sum(n for n, _ in buckets.values())
        samples.append(("_bucket", {"stage": stage, "le": "+Inf"}, count))
        samples.append(("_sum", {"stage": stage}, sum(s for _, s in buckets.values())))
        samples.append(("_count", {"stage": stage}, count))
    return samples


routes = [Route("/metrics", metrics, methods=["GET"])]
