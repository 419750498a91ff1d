"""``chronos search "question" [-k 5] [--mode hybrid|vector|text] [filters] [--as-of T] [--json]``."""

from __future__ import annotations

import argparse
import asyncio
import os
import textwrap
import urllib.error
import urllib.parse
import urllib.request

import orjson

from app.errors import InvalidRequest
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
    p.add_argument("--local", action="store_true",
                   help="search in this process even when a chronos serve of this database is running "
                        "(by default it answers: its model is loaded)")  # fmt: skip
    p.set_defaults(func=main)


MAX_REMOTE_K = 100  # GET /search's own limit
REMOTE_TIMEOUT_S = 60.0


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
    hits = None if args.local or args.model else await asyncio.to_thread(ask_serve, args)
    if hits is None:
        async with open_runtime() as rt:
            hits = await search(rt.pool, rt.settings, args.question, args.k, args.model, store=rt.store,
                                actor="cli", mode=args.mode, as_of=args.as_of, filters=filters)  # fmt: skip
    if args.json:
        print(orjson.dumps([h.to_json() for h in hits]).decode())
        return 0
    if not hits:
        print("no matching chunks")
    for i, h in enumerate(hits, 1):
        print(render_hit(i, h))
    return 0


def ask_serve(args: argparse.Namespace) -> list[SearchHit] | None:
    """The hits from a running ``chronos serve`` of this database (app/services/running_serve.py), or
    None when there is none, it cannot be reached or it wants a token this process lacks
    (``CHRONOS_API_TOKEN`` is sent when set): then this process searches itself."""
    from app.config import Settings
    from app.services.running_serve import find

    url = find(Settings.from_env())
    if url is None or args.k > MAX_REMOTE_K:
        return None
    params: list[tuple[str, str]] = [("q", args.question), ("k", str(args.k)), ("mode", args.mode)]
    single = {"as_of": args.as_of, "filename": args.filename, "uploaded_from": args.uploaded_from,
              "uploaded_to": args.uploaded_to}  # fmt: skip
    params += [(k, v) for k, v in single.items() if v]
    many = {"document_id": args.document_ids, "media_type": args.media_types, "source": args.sources,
            "collection": args.collections, "meta": args.meta}  # fmt: skip
    params += [(k, v) for k, values in many.items() for v in values or ()]
    request = urllib.request.Request(f"{url.rstrip('/')}/search?{urllib.parse.urlencode(params)}")
    token = os.environ.get("CHRONOS_API_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=REMOTE_TIMEOUT_S) as answer:
            body = orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 404, 422):  # the question or a filter is wrong: the same here as there
            raise InvalidRequest(_error_message(exc)) from None
        return None  # 401/403 (a token needed), 5xx: search here
    except (OSError, ValueError):
        return None  # not listening (any more), or not a chronos serve
    return [SearchHit(**h) for h in body.get("hits") or []]


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(orjson.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"chronos serve answered {exc.code}"


def render_hit(i: int, h: SearchHit) -> str:
    """Title, file, pages, heading path, then the snippet around the best-matching sentences."""
    where = " > ".join(h.heading_path) or "-"
    pages = ",".join(map(str, h.pages)) or "-"
    head = f"{i}. {h.score:.3f}  {h.title or h.filename}" + (f"  ({h.filename})" if h.title else "")
    snippet = (h.snippet or h.text[:300]).replace("\n", " ")
    body = textwrap.fill(snippet, width=100, initial_indent="   ", subsequent_indent="   ")
    place = "" if h.collection == "default" else f"  collection {h.collection}"
    return f"{head}\n   p.{pages}  [{where}]{place}\n{body}"
