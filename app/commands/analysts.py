"""``chronos analysts grant ROLE --collection NAME … | revoke ROLE --collection NAME … | list``: database
roles for analysts limited to some collections (row-level security; docs/sql.md)."""

from __future__ import annotations

import argparse

import orjson

from app.runtime import open_runtime
from app.services import analysts


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("analysts", help="limit analyst database roles to some collections")
    actions = p.add_subparsers(dest="action", required=True)
    for action, helptext in (("grant", "let ROLE see these collections (and only those)"),
                             ("revoke", "take these collections from ROLE")):  # fmt: skip
        a = actions.add_parser(action, help=helptext)
        a.add_argument("role", help="a database role (CREATE ROLE alice LOGIN PASSWORD …)")
        a.add_argument("--collection", action="append", dest="collections", required=True, metavar="NAME")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=change, action=action)
    ls = actions.add_parser("list", help="the limited roles and their collections")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=listing)


async def change(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        do = analysts.grant if args.action == "grant" else analysts.revoke
        now = await do(rt.pool, args.role, args.collections)
    if args.json:
        print(orjson.dumps({"role": args.role, "collections": now}).decode())
    else:
        print(f"role {args.role} sees collections: {', '.join(now)}")
    return 0


async def listing(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        rows = await analysts.listing(rt.pool)
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no limited analyst roles (members of chronos_analyst see every collection)")
    for r in rows:
        missing = "" if r["exists"] else "  (role does not exist)"
        print(f"{r['role']:<24} {', '.join(r['collections'])}{missing}")
    return 0
