"""``chronos tokens create NAME --scope read|write|admin [--collection C …] | list | revoke ID``.

The new token is printed once (``{"token": …, "token_id": …, "scope": …, "collections": […]}`` with
``--json``; ``collections`` null: every collection); only its sha256 is stored. A token made with
``--collection`` sees only those collections (app/services/visibility.py). The tokens projection is
brought up to date before the command returns, so a new token works (and a revoked one stops working,
within a few seconds in a running server) at once.
"""

from __future__ import annotations

import argparse

import orjson

from app.catalogue.events import SCOPES
from app.runtime import Runtime, open_runtime
from app.services import tokens
from events.subscription import Subscription
from projections.tokens import TokensProjector


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="create, list and revoke API tokens")
    actions = p.add_subparsers(dest="action", required=True)
    c = actions.add_parser("create", help="make a token (printed once)")
    c.add_argument("name", help="who or what uses it, e.g. directus-flow or alice")
    c.add_argument("--scope", required=True, choices=SCOPES, help="read < write < admin (delete, paid reprocess)")
    c.add_argument(
        "--collection", action="append", dest="collections", metavar="NAME",
        help="limit the token to this collection (repeat for several; default: every collection)",
    )  # fmt: skip
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=create)
    ls = actions.add_parser("list", help="every token (never the token itself)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=listing)
    r = actions.add_parser("revoke", help="stop a token working")
    r.add_argument("token_id")
    r.add_argument("--reason", default="revoked by cli")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=revoke)


async def _catch_up(rt: Runtime) -> None:
    projector = TokensProjector()
    await Subscription(rt.store, projector.subscription, projector.apply).catch_up()


async def create(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        token_id, token = await tokens.create(
            rt.store, args.name, args.scope, actor="cli", collections=args.collections
        )
        await _catch_up(rt)
    collections = list(dict.fromkeys(args.collections)) if args.collections else None
    if args.json:
        print(orjson.dumps({"token": token, "token_id": token_id, "name": args.name, "scope": args.scope,
                            "collections": collections}).decode())  # fmt: skip
    else:
        where = f"collections {', '.join(collections)}" if collections else "every collection"
        print(f"token {token_id} ({args.scope}, {where}) for {args.name}; it is shown only now:")
        print(token)
    return 0


async def listing(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        await _catch_up(rt)
        rows = await tokens.listing(rt.pool)
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no tokens (CHRONOS_API_TOKENS, if set, are admin tokens)")
    for r in rows:
        state = f"revoked {r['revoked_at'][:19]}" if r["revoked_at"] else "active"
        where = ",".join(r["collections"]) if r["collections"] is not None else "*"
        print(f"{r['token_id']}  {r['scope']:<5}  {state:<27}  {where:<20}  {r['name']}")
    return 0


async def revoke(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        done = await tokens.revoke(rt.store, rt.pool, args.token_id, actor="cli", reason=args.reason)
        await _catch_up(rt)
    if args.json:
        print(orjson.dumps({"token_id": args.token_id, "revoked": done, "already_revoked": not done}).decode())
    else:
        print(f"revoked {args.token_id}" if done else f"{args.token_id} was revoked already")
    return 0
