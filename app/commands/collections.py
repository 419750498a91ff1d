"""``chronos collections list [--json]``, ``chronos collections create NAME [--description TEXT]
[--budget USD] [--json]``, ``chronos collections budget NAME USD|none`` and ``chronos collections stats
[NAME] [--json]`` (docs/collections.md).

A collection is created before documents are uploaded into it (``default`` always exists), so a typo in
``chronos ingest --collection`` is refused instead of making a collection nobody asked for.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import orjson

from app.catalogue.collections import NAME_RULE, unknown_collection, validate_collection_name
from app.runtime import open_runtime
from app.services import collections as service
from projections.collections import CollectionsProjector
from projections.runner import catch_up_all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collections", help="list, create and count collections of documents")
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="every collection with its live document count")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=listing)
    create = actions.add_parser("create", help="a new collection to upload documents into")
    create.add_argument("name", help=f"the name: {NAME_RULE}")
    create.add_argument("--description", default="")
    create.add_argument("--budget", type=float, default=None, metavar="USD", help="monthly budget in USD")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=creating)
    budget = actions.add_parser("budget", help="set (or with `none` remove) a collection's monthly budget")
    budget.add_argument("name", help="the collection (`default` too)")
    budget.add_argument("usd", type=_budget, metavar="USD|none", help="monthly budget in USD, or none")
    budget.set_defaults(func=budgeting)
    stats = actions.add_parser("stats", help="documents by status, chunks, vectors, bytes, spend this month")
    stats.add_argument("name", nargs="?", help="one collection (default: every one)")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=statistics)


def _budget(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD (or none)") from None


async def budgeting(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        await service.set_budget(rt.store, args.name, args.usd, actor="cli")
        await service.catch_up(rt.store, CollectionsProjector())
    shown = "no budget of its own" if args.usd is None else f"a budget of ${args.usd:.2f}/month"
    print(f"collection {args.name} has {shown} (the global budget applies too)")
    return 0


def _json(value: Any) -> str:
    return orjson.dumps(value, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v)).decode()


async def listing(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        await catch_up_all(rt.pool, rt.dsn)
        rows = await service.listing(rt.pool)
    if args.json:
        print(_json(rows))
        return 0
    print(f"{'collection':<24} {'documents':>9}  {'budget/month':>12}  description")
    for r in rows:
        budget = f"${r['monthly_budget_usd']:.2f}" if r["monthly_budget_usd"] is not None else "-"
        print(f"{r['name']:<24} {r['documents']:>9}  {budget:>12}  {r['description']}")
    return 0


async def creating(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        created = await service.create(
            rt.store, args.name, description=args.description, monthly_budget_usd=args.budget, actor="cli"
        )
        await service.catch_up(rt.store, CollectionsProjector())
    if args.json:
        print(_json(created.to_json()))
    else:
        budget = f", budget ${created.monthly_budget_usd:.2f}/month" if created.monthly_budget_usd is not None else ""
        print(f"created collection {created.name}{budget}: chronos ingest --collection {created.name} PATH…")
    return 0


async def statistics(args: argparse.Namespace) -> int:
    names = [validate_collection_name(args.name)] if args.name else None
    async with open_runtime() as rt:
        await catch_up_all(rt.pool, rt.dsn)
        rows = await service.stats(rt.pool, names)
    if args.name and not rows:
        raise unknown_collection(args.name)
    if args.json:
        print(_json(rows[0] if args.name else rows))
        return 0
    for r in rows:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(r["by_status"].items())) or "none"
        budget = f" of ${r['monthly_budget_usd']:.2f}" if r["monthly_budget_usd"] is not None else ""
        print(f"{r['name']}: {r['documents']} live documents ({statuses}); {r['chunks']} chunks, {r['vectors']} "
              f"vectors, {r['bytes']} bytes; ${r['spent_this_month_usd']:.6f} spent this month{budget}")  # fmt: skip
    return 0
