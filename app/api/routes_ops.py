"""``/search``, ``/costs``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.alerts.state import recent_alerts
from app.api import bodies
from app.api.auth import actor_of, principal_of_request, public, reads
from app.api.bodies import typed
from app.api.common import int_param, runtime
from app.api.errors import ApiError
from app.api.responses import json_response
from app.services import visibility
from app.services.budget import collection_months, month_to_date
from app.services.search import NothingSearchable, active_model
from events.sqlfiles import query

MAX_QUERY_CHARS = 4000
MAX_COST_DAYS = 3660


@reads
async def search(request: Request) -> Response:
    """``GET /search?q=&k=&mode=hybrid|vector|text&as_of=&document_id=&filename=&media_type=&source=
    &uploaded_from=&uploaded_to=&collection=&meta=`` (document_id, media_type, source, collection and meta
    repeatable; meta is ``KEY=VALUE`` or a JSON object to contain; a bad collection or meta is a 422)."""
    from app.errors import InvalidRequest
    from app.services.search import MODES, InvalidFilter, SearchFilters, parse_meta_filter, parse_when
    from app.services.search import search as run_search

    rt = runtime(request)
    params = request.query_params
    q = params.get("q", "")
    if not q.strip():
        raise ApiError(400, "invalid_parameter", "q (the question) is required")
    if len(q) > MAX_QUERY_CHARS:
        raise ApiError(400, "invalid_parameter", f"q is longer than {MAX_QUERY_CHARS} characters")
    k = int_param(request, "k", 5, 1, 100)
    mode = params.get("mode", "hybrid")
    if mode not in MODES:
        raise ApiError(400, "invalid_parameter", f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    try:
        filters = SearchFilters(
            document_ids=params.getlist("document_id") or None, filename=params.get("filename") or None,
            media_types=params.getlist("media_type") or None, sources=params.getlist("source") or None,
            uploaded_from=parse_when(params["uploaded_from"]) if params.get("uploaded_from") else None,
            uploaded_to=parse_when(params["uploaded_to"]) if params.get("uploaded_to") else None,
            collections=params.getlist("collection") or None,
            metadata=[parse_meta_filter(m) for m in params.getlist("meta")] or None,
        )  # fmt: skip
        filters.uuids(), filters.collection_names(), filters.metadata_objects()
    except InvalidFilter as exc:
        raise ApiError(422, "invalid_filter", str(exc)) from None
    except InvalidRequest as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from None
    # Within the collections the token sees: each one asked for must be one of them (404 as if absent).
    filters = dataclasses.replace(filters, collections=visibility.within(principal_of_request(request),
                                                                         filters.collection_names()))  # fmt: skip
    as_of = params.get("as_of") or None
    found = await active_model(rt.pool)
    if found is None:
        return json_response({"query": q, "k": k, "model": None, "mode": mode, "hits": [],
                              "note": NothingSearchable.__doc__})  # fmt: skip
    model = found[0]
    hits = await run_search(rt.pool, rt.settings, q, k, model, store=rt.store, actor=actor_of(request), mode=mode,
                            as_of=as_of, filters=filters)  # fmt: skip
    return json_response({"query": q, "k": k, "model": model, "mode": mode, "as_of": as_of,
                          "hits": [h.to_json() for h in hits]})  # fmt: skip


def _date(request: Request, name: str, default: dt.date) -> dt.date:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw[:10]) if len(raw) >= 10 else dt.date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a date YYYY-MM-DD, not {raw!r}") from None


@reads
async def costs(request: Request) -> Response:
    """``GET /costs?from=&to=&collection=``: spend per day (and per collection) and this month's budgets.
    With ``collection``, or for a token limited to some collections, only their spend and their budgets
    (the global month is then not shown)."""
    rt = runtime(request)
    today = dt.datetime.now(dt.UTC).date()
    start = _date(request, "from", today.replace(day=1))
    end = _date(request, "to", today)
    if end < start:
        raise ApiError(400, "invalid_parameter", "to is before from")
    if (end - start).days > MAX_COST_DAYS:
        raise ApiError(400, "invalid_parameter", f"at most {MAX_COST_DAYS} days at once")
    requested = request.query_params.get("collection") or None
    collections = visibility.narrowed(principal_of_request(request), requested)
    rows = await rt.pool.fetch(query("api", "costs_daily_by_collection"), start, end, collections)
    days: dict[dt.date, dict[str, Any]] = {}
    total = Decimal(0)
    for r in rows:
        day = days.setdefault(
            r["day"],
            {"day": r["day"].isoformat(), "usd": Decimal(0), "by_stage": {}, "by_collection": {}, "lines": 0,
             "parts": []},
        )  # fmt: skip
        day["usd"] += r["usd"]
        day["by_stage"][r["stage"]] = float(Decimal(str(day["by_stage"].get(r["stage"], 0))) + r["usd"])
        where = r["collection"] or UNATTRIBUTED
        day["by_collection"][where] = float(Decimal(str(day["by_collection"].get(where, 0))) + r["usd"])
        day["lines"] += r["lines"]
        day["parts"].append({"stage": r["stage"], "provider": r["provider"], "collection": r["collection"],
                             "usd": float(r["usd"]), "overhead_usd": float(r["overhead_usd"])})  # fmt: skip
        total += r["usd"]
    per_collection = [c.to_json() for c in await collection_months(rt.pool, collections)]
    body: dict[str, Any] = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "collection": requested,
        "total_usd": float(total),
        "days": [{**d, "usd": float(d["usd"])} for _k, d in sorted(days.items())],
        "collections": per_collection,
    }
    if collections is None:  # every collection: the global budget and its alerts too
        month = await month_to_date(rt.pool, rt.settings)
        alerts = [a.to_json() for a in await recent_alerts(rt.pool)]
        body["month"] = {
            "month": month.month,
            "spent_usd": float(month.spent_usd),
            "budget_usd": float(month.budget_usd),
            "over_budget": month.over_budget,
            "alerts": [a for a in alerts if a["month"] == month.month[:7]],
            "alert_webhook": rt.settings.alert_webhook_url is not None,
        }
    else:
        body["month"] = _month_of(per_collection)
    return json_response(typed(bodies.Costs, body))


UNATTRIBUTED = "(none)"  # cost lines of no document: query embeddings, bill reconciliation


def _month_of(per_collection: list[dict[str, Any]]) -> dict[str, Any]:
    """This month over some collections: their spend against their budgets (None when none has one)."""
    budgets = [c["budget_usd"] for c in per_collection if c["budget_usd"] is not None]
    spent = sum(Decimal(str(c["spent_usd"])) for c in per_collection)
    return {
        "month": per_collection[0]["month"] if per_collection else None,
        "spent_usd": float(spent),
        "budget_usd": float(sum(Decimal(str(b)) for b in budgets)) if budgets else None,
        "over_budget": any(c["over_budget"] for c in per_collection),
        "alerts": [],
        "alert_webhook": False,
    }


@public
async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


@public
async def readyz(request: Request) -> Response:
    """Ready: the database answers and at least one stage worker is connected and heartbeating."""
    state = request.app.state
    rt = getattr(state, "rt", None)
    checks: dict[str, Any] = {"database": {"ok": False}, "workers": {"ok": False}}
    if rt is not None:
        try:
            async with asyncio.timeout(5):
                await rt.pool.fetchval("SELECT 1")
                checks["database"] = {"ok": True}
                workers = await rt.pool.fetchrow(query("api", "workers_connected"))
                leases = await rt.pool.fetchrow(query("api", "job_leases"))
            assert workers is not None and leases is not None
            connected = int(workers["n"])
            checks["workers"] = {
                "ok": connected > 0,
                "connected": connected,
                "in_process": state.worker_slots,
                "jobs_running": int(leases["running"]),
                "expired_leases": int(leases["expired"]),
                "jobs_ready": int(leases["ready"]),
                "oldest_ready_s": leases["oldest_ready_s"],
            }
            if connected == 0:
                checks["workers"]["reason"] = (
                    "no stage worker is connected (run chronos worker or serve --with-workers)"
                )
            elif int(leases["expired"]):
                checks["workers"]["note"] = (
                    "some running jobs hold expired leases (a worker died); they will be retried"
                )
        except (TimeoutError, OSError) as exc:
            checks["database"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # asyncpg errors: report, never raise from a probe
            checks["database"] = {"ok": False, "reason": f"{type(exc).__name__}"}
    ready = all(c["ok"] for c in checks.values())
    return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


routes = [
    Route("/search", search, methods=["GET"]),
    Route("/costs", costs, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
