"""``chronos search "question" [-k 5] [--json]``: the chunks nearest to a question."""

from __future__ import annotations

import argparse

import orjson

from app.runtime import open_runtime
from app.services.search import search


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="semantic search over the searchable documents")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    p.add_argument("--model", help="embedding model (default: the active search model)")
    p.add_argument("--json", action="store_true", help="a JSON list of hits")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        hits = await search(rt.pool, rt.settings, args.question, args.k, args.model)
    if args.json:
        print(orjson.dumps([h.to_json() for h in hits]).decode())
        return 0
    if not hits:
        print("no matching chunks")
    for i, h in enumerate(hits, 1):
        where = " > ".join(h.heading_path) or "-"
        pages = ",".join(map(str, h.pages)) or "-"
        print(f"{i}. {h.score:.3f}  {h.filename}  p.{pages}  [{where}]")
        print("   " + h.text[:300].replace("\n", " "))
    return 0
