"""``chronos costs [--collection NAME] [--json]``: month-to-date spend against the monthly budget, by
stage/provider, and each collection's spend against its own budget (the budgets are resolved in
app/services/budget.py; ``--collection``: that collection only) and this and last month's budget alerts
(app/alerts/); ``chronos costs reconcile --provider modal``:
make the ledger's Modal totals equal Modal's bill (app/convert/billing.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

import asyncpg
import orjson

from app.alerts.delivery import Deliverer
from app.alerts.state import recent_alerts
from app.errors import InvalidRequest
from app.runtime import open_runtime
from app.services.budget import collection_months, month_to_date, spend_by_stage_provider


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("costs", help="month-to-date spend against the monthly budget")
    p.add_argument("--json", action="store_true")
    p.add_argument("--collection", metavar="NAME", help="only this collection's spend, against its own budget")
    p.add_argument(
        "--resend-alerts", action="store_true",
        help="deliver this and last month's budget alerts the webhook has not accepted yet, now",
    )  # fmt: skip
    p.set_defaults(func=main)
    more = p.add_subparsers(dest="costs_command", metavar="reconcile")
    r = more.add_parser("reconcile", help="make the ledger's provider totals equal the provider's bill")
    r.add_argument("--provider", required=True, choices=["modal"])
    r.add_argument("--from", dest="start", type=date.fromisoformat, help="first UTC day (default: this month's first)")
    r.add_argument("--to", dest="end", type=date.fromisoformat, help="UTC day after the last (default: today)")
    r.add_argument("--app", default=None, help="Modal app name (default: chronos-docling)")
    r.add_argument("--dry-run", action="store_true", help="show the adjustments, append nothing")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=reconcile_main)


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        if args.resend_alerts:
            if rt.settings.alert_webhook_url is None:
                raise InvalidRequest("no webhook to send alerts to: set CHRONOS_ALERT_WEBHOOK_URL")
            for outcome in await Deliverer(rt.store, rt.settings).deliver_pending(force=True):
                d = outcome.delivery
                said = "delivered" if d.ok else f"not delivered ({d.error})"
                print(f"alert {outcome.month} {outcome.threshold_pct} %: {said} after {d.attempts} attempt(s)",
                      file=sys.stderr)  # fmt: skip
        if args.collection is not None:
            return await _collection_report(rt.pool, args.collection, as_json=args.json)
        month = await month_to_date(rt.pool, rt.settings)
        alerts = [a.to_json() for a in await recent_alerts(rt.pool)]
        per_collection = [c.to_json() for c in await collection_months(rt.pool, None)]
    report = {**month.to_json(), "alerts": alerts, "alert_webhook": rt.settings.alert_webhook_url is not None,
              "collections": per_collection}  # fmt: skip
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(f"{report['month'][:7]}: ${report['spent_usd']:.4f} spent of ${report['budget_usd']:.2f} budget")
        for line in report["by_stage_provider"]:
            print(f"  {line['stage']:<8} {line['provider']:<8} ${line['usd']:.6f}")
        for alert in alerts:
            print(alert_line(alert, webhook=rt.settings.alert_webhook_url is not None))
        for c in per_collection:
            print(collection_line(c))
    if month.over_budget:
        print(
            f"warning: month-to-date spend ${report['spent_usd']:.2f} is over the ${report['budget_usd']:.2f} budget",
            file=sys.stderr,
        )
    return 0


def collection_line(c: dict[str, Any]) -> str:
    budget = f"of ${c['budget_usd']:.2f} budget" if c["budget_usd"] is not None else "(no budget of its own)"
    over = "  OVER BUDGET" if c["over_budget"] else ""
    return f"  collection {c['collection']:<20} ${c['spent_usd']:.4f} {budget}{over}"


async def _collection_report(pool: asyncpg.Pool, name: str, *, as_json: bool) -> int:
    """``chronos costs --collection NAME``: the collection's month to date against its own budget."""
    from app.catalogue.collections import unknown_collection, validate_collection_name

    validate_collection_name(name)
    known = await pool.fetchval("SELECT count(*) FROM collections WHERE name = $1", name)
    month = (await collection_months(pool, [name]))[0]
    report = {**month.to_json(), "by_stage_provider": await spend_by_stage_provider(pool, [name])}
    if not known and month.spent_usd == 0:
        raise unknown_collection(name)
    if as_json:
        print(orjson.dumps(report).decode())
        return 0
    budget = f"${report['budget_usd']:.2f} budget" if month.budget_usd is not None else "no budget of its own"
    print(f"{report['month'][:7]} collection {name}: ${report['spent_usd']:.4f} spent of {budget}")
    for line in report["by_stage_provider"]:
        print(f"  {line['stage']:<8} {line['provider']:<8} ${line['usd']:.6f}")
    if month.over_budget:
        print(f"warning: collection {name} spent ${report['spent_usd']:.2f}, over its ${report['budget_usd']:.2f} "
              "budget", file=sys.stderr)  # fmt: skip
    return 0


def alert_line(alert: dict[str, Any], *, webhook: bool) -> str:
    when = alert["crossed_at"][:16].replace("T", " ")
    if alert["delivery"] == "delivered":
        state = f"delivered to the webhook ({alert['attempts']} attempt(s))"
    elif alert["delivery"] == "failed":
        state = f"NOT delivered after {alert['attempts']} attempt(s): {alert['last_error']}"
    else:
        state = "delivery pending" if webhook else "not sent (CHRONOS_ALERT_WEBHOOK_URL is not set)"
    return (f"alert {alert['month']} {alert['threshold_pct']} % of budget: crossed {when} UTC at "
            f"${alert['spent_usd']:.2f} of ${alert['budget_usd']:.2f}; {state}")  # fmt: skip


async def reconcile_main(args: argparse.Namespace) -> int:
    from app.convert import billing
    from app.convert.options import modal_configured

    if not modal_configured():
        raise InvalidRequest(
            "Modal is not configured: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET to a token of the workspace the "
            "app is deployed in"
        )
    start, end = billing.default_period()
    async with open_runtime() as rt:
        result = await billing.reconcile_modal(
            rt.pool, rt.store, args.start or start, args.end or end, app=args.app or billing.APP_NAME,
            dry_run=args.dry_run,
        )  # fmt: skip
    report = result.to_json()
    if args.json:
        print(orjson.dumps(report).decode())
        return 0
    print(f"Modal ({report['app']}), {report['from']} to {report['to']} (UTC days, end exclusive)")
    print(f"  {'day':<10} {'bill':>12} {'ledger':>12} {'adjustment':>12}")
    for day in report["days"]:
        print(f"  {day['day']:<10} {day['bill_usd']:>12.6f} {day['ledger_usd']:>12.6f} {day['adjustment_usd']:>12.6f}")
    verb = "would append" if args.dry_run else "appended"
    adjusted = sum(1 for d in report["days"] if d["adjustment_usd"])
    print(f"bill ${report['bill_usd']:.6f}, ledger ${report['ledger_before_usd']:.6f} -> "
          f"${report['ledger_after_usd']:.6f}; {verb} {adjusted} adjustment(s)")  # fmt: skip
    return 0
