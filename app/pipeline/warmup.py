"""Load what the stages need before the first job arrives, all at once.

Left lazy, each stage pays its start-up when its first job comes: the converter process (Docling's
imports), then LlamaIndex's node parsers, then the embedding model, one after the other — tens of
seconds on a small machine before the first document is searchable. Started together when a worker
starts (while ``chronos ingest`` is still uploading), they overlap. A failure here is only logged:
the stage itself reports it, as a failure event, when it runs.

Each part runs in a daemon thread, not in asyncio's default executor: ``asyncio.run`` joins the
executor's threads before it returns, so a worker stopped (SIGTERM) while the model still loads used to
linger until the loading finished (80 s on a loaded two-core machine). A daemon thread is left behind
instead; a converter process it was starting exits by itself when its parent goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

from app.config import Settings

logger = logging.getLogger(__name__)


def warm_converter() -> None:
    from app.convert.local import default_pool

    default_pool().warm()


WARM_UP_MARKDOWN = "# Warm-up\n\nOne sentence to split. Another one, so the splitter has work.\n\n## Part\n\nMore.\n"
_BOX = {"l": 0.0, "t": 0.0, "r": 10.0, "b": 10.0, "coord_origin": "TOPLEFT"}
_PROV = [{"page_no": 1, "bbox": _BOX, "charspan": [0, 10]}]
_SENTENCES = "One sentence to split. Another one, so the splitter has work."
# What DoclingDocument(name="warm-up") with a heading and a paragraph on page 1 exports (tested
# against docling_core): written out so the worker never imports docling_core and pandas with it
# (59 MB it does not otherwise need: the chunker walks the JSON as plain data).
WARM_UP_DOCUMENT: dict[str, object] = {
    "schema_name": "DoclingDocument",
    "version": "1.10.0",
    "name": "warm-up",
    "furniture": {"self_ref": "#/furniture", "children": [], "content_layer": "furniture", "name": "_root_",
                  "label": "unspecified"},
    "body": {"self_ref": "#/body", "children": [{"$ref": "#/texts/0"}, {"$ref": "#/texts/1"}],
             "content_layer": "body", "name": "_root_", "label": "unspecified"},
    "groups": [],
    "texts": [
        {"self_ref": "#/texts/0", "parent": {"$ref": "#/body"}, "children": [], "content_layer": "body",
         "label": "section_header", "prov": _PROV, "orig": "Warm-up", "text": "Warm-up", "level": 1},
        {"self_ref": "#/texts/1", "parent": {"$ref": "#/body"}, "children": [], "content_layer": "body",
         "label": "text", "prov": _PROV, "orig": _SENTENCES, "text": _SENTENCES},
    ],
    "pictures": [],
    "tables": [],
    "key_value_items": [],
    "form_items": [],
    "pages": {"1": {"size": {"width": 612.0, "height": 792.0}, "page_no": 1}},
}  # fmt: skip


def warm_chunker() -> None:
    """Chunk a tiny document: imports LlamaIndex's node parsers (the chunker imports them lazily)
    and pays their first-call costs (sentence tokenizer, regexes)."""
    import orjson

    from app.chunking import chunk_document

    chunk_document(
        orjson.dumps(WARM_UP_DOCUMENT),
        WARM_UP_MARKDOWN,
        embedder_max_tokens=256,
        count_tokens=lambda texts: [len(t.split()) + 2 for t in texts],
        tokenizer_name="words",
    )


def warm_embedder(settings: Settings) -> None:
    from app.embedders import get_embedder

    embedder = get_embedder(None, settings)
    warm = getattr(embedder, "warm_up", None)
    if callable(warm):
        warm()


def _timed(name: str, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # the stage reports it properly when it runs
        logger.warning("warm-up of %s failed: %s", name, exc, extra={"action": "warm_up", "part": name})
    return round(time.perf_counter() - start, 3)


async def warm_up(stages: Iterable[str], settings: Settings) -> dict[str, float]:
    """Warm the parts the given stages use, concurrently; seconds each took."""
    wanted = set(stages)
    parts: dict[str, Callable[[], None]] = {}
    if "convert" in wanted:
        parts["converter"] = warm_converter
    if "chunk" in wanted:
        parts["chunker"] = warm_chunker
    if wanted & {"chunk", "embed"}:  # chunking counts tokens with the embedder's tokenizer
        parts["embedder"] = lambda: warm_embedder(settings)
    return await warm_parts(parts)


async def warm_parts(parts: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Run each part in a daemon thread of its own, concurrently; seconds each took. Cancelled (the
    worker stops), it returns at once and leaves the threads to finish or die with the process."""
    names = list(parts)
    took = await asyncio.gather(*(_in_daemon_thread(n, parts[n]) for n in names))
    return dict(zip(names, took, strict=True))


async def _in_daemon_thread(name: str, fn: Callable[[], None]) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()

    def deliver(seconds: float) -> None:
        if not done.done():  # not cancelled meanwhile
            done.set_result(seconds)

    def run() -> None:
        seconds = _timed(name, fn)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, seconds)

    threading.Thread(target=run, name=f"warm-up:{name}", daemon=True).start()
    return await done
