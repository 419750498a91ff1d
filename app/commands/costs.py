"""``chronos costs [--json]``: month-to-date spend against the monthly budget, by stage/provider.

The budget is ``settings.monthly_budget_usd`` (default $50, the product plan's alert threshold);
the environment variable ``CHRONOS_MONTHLY_BUDGET_USD`` overrides it.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from app.runtime import open_runtime


async def month_to_date(pool: asyncpg.Pool) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT month, spent_usd, budget_usd FROM v_budget_month")
    assert row is not None
    budget = Decimal(os.environ.get("CHRONOS_MONTHLY_BUDGET_USD") or row["budget_usd"])
    lines = await pool.fetch(
        "SELECT stage, provider, sum(amount_usd) AS usd FROM cost_ledger "
        "WHERE recorded_at >= date_trunc('month', now()) GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    spent = Decimal(row["spent_usd"])
    return {
        "month": row["month"].isoformat(),
        "spent_usd": float(spent),
        "budget_usd": float(budget),
        "remaining_usd": float(budget - spent),
        "over_budget": spent > budget,
        "by_stage_provider": [{"stage": r["stage"], "provider": r["provider"], "usd": float(r["usd"])} for r in lines],
    }


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("costs", help="month-to-date spend against the monthly budget")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        report = await month_to_date(rt.pool)
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(f"{report['month'][:7]}: ${report['spent_usd']:.4f} spent of ${report['budget_usd']:.2f} budget")
        for line in report["by_stage_provider"]:
            print(f"  {line['stage']:<8} {line['provider']:<8} ${line['usd']:.6f}")
    if report["over_budget"]:
        print(
            f"warning: month-to-date spend ${report['spent_usd']:.2f} is over the ${report['budget_usd']:.2f} budget",
            file=sys.stderr,
        )
    return 0
