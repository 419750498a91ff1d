"""``chronos costs [--json]``: month-to-date spend against the monthly budget, by stage/provider
(the budget is resolved in app/services/budget.py)."""

from __future__ import annotations

import argparse
import sys

import orjson

from app.runtime import open_runtime
from app.services.budget import month_to_date


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("costs", help="month-to-date spend against the monthly budget")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        month = await month_to_date(rt.pool, rt.settings)
    report = month.to_json()
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(f"{report['month'][:7]}: ${report['spent_usd']:.4f} spent of ${report['budget_usd']:.2f} budget")
        for line in report["by_stage_provider"]:
            print(f"  {line['stage']:<8} {line['provider']:<8} ${line['usd']:.6f}")
    if month.over_budget:
        print(
            f"warning: month-to-date spend ${report['spent_usd']:.2f} is over the ${report['budget_usd']:.2f} budget",
            file=sys.stderr,
        )
    return 0
