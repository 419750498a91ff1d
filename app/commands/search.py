"""``chronos search "question" [-k 5] [--mode hybrid|vector|text] [filters] [--as-of T] [--json]``."""

from __future__ import annotations

import argparse
import os
import textwrap

import orjson

from app.runtime import open_runtime
from app.services.search import MODES, SearchFilters, SearchHit, parse_meta_filter, parse_when, search


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="search the searchable documents (hybrid: full text + vectors)")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    p.add_argument("--mode", choices=MODES, default="hybrid",
                   help="hybrid (default: full text and vectors fused), vector, or text (no model)")  # fmt: skip
    p.add_argument("--model", help="embedding model (default: the active search model)")
    p.add_argument(
        "--as-of",
        dest="as_of",
        metavar="TIMESTAMP|POSITION",
        help="answer with the chunks current at that moment (ISO timestamp or log position)",
    )
    p.add_argument("--document", dest="document_ids", action="append", metavar="ID",
                   help="only this document (repeatable)")  # fmt: skip
    p.add_argument("--filename", metavar="GLOB", help='only files whose name matches, e.g. "*.pdf"')
    p.add_argument(
        "--media-type",
        dest="media_types",
        action="append",
        metavar="TYPE",
        help="only this media type, e.g. application/pdf (repeatable)",
    )
    p.add_argument("--source", dest="sources", action="append", help="only this source: cli, api, directus")
    p.add_argument("--uploaded-from", dest="uploaded_from", metavar="DATE", help="uploaded at or after")
    p.add_argument("--uploaded-to", dest="uploaded_to", metavar="DATE", help="uploaded before")
    p.add_argument("--collection", dest="collections", action="append", metavar="NAME",
                   help="only this collection (repeatable)")  # fmt: skip
    p.add_argument("--meta", dest="meta", action="append", metavar="KEY=VALUE|JSON",
                   help='only documents whose metadata has KEY=VALUE, or contains a JSON object such as '
                        '\'{"tags": ["hr"]}\' (repeatable: all must hold)')  # fmt: skip
    p.add_argument("--json", action="store_true", help="a JSON list of hits")
    p.set_defaults(func=main)


def filters_of(args: argparse.Namespace) -> SearchFilters:
    return SearchFilters(
        document_ids=args.document_ids, filename=args.filename, media_types=args.media_types, sources=args.sources,
        uploaded_from=parse_when(args.uploaded_from) if args.uploaded_from else None,
        uploaded_to=parse_when(args.uploaded_to) if args.uploaded_to else None,
        collections=args.collections, metadata=[parse_meta_filter(m) for m in args.meta or []] or None,
    )  # fmt: skip


def quiet_model_loading() -> None:
    """No "Loading weights" bars or model-card chatter between the question and its answer."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


async def main(args: argparse.Namespace) -> int:
    quiet_model_loading()
    filters = filters_of(args)
    async with open_runtime() as rt:
        hits = await search(rt.pool, rt.settings, args.question, args.k, args.model, store=rt.store, actor="cli",
                            mode=args.mode, as_of=args.as_of, filters=filters)  # fmt: skip
    if args.json:
        print(orjson.dumps([h.to_json() for h in hits]).decode())
        return 0
    if not hits:
        print("no matching chunks")
    for i, h in enumerate(hits, 1):
        print(render_hit(i, h))
    return 0


def render_hit(i: int, h: SearchHit) -> str:
    """Title, file, pages, heading path, then the snippet around the best-matching sentences."""
    where = " > ".join(h.heading_path) or "-"
    pages = ",".join(map(str, h.pages)) or "-"
    head = f"{i}. {h.score:.3f}  {h.title or h.filename}" + (f"  ({h.filename})" if h.title else "")
    snippet = (h.snippet or h.text[:300]).replace("\n", " ")
    body = textwrap.fill(snippet, width=100, initial_indent="   ", subsequent_indent="   ")
    place = "" if h.collection == "default" else f"  collection {h.collection}"
    return f"{head}\n   p.{pages}  [{where}]{place}\n{body}"
