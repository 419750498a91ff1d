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


def warm_chunker() -> None:
    """Chunk a tiny document: imports LlamaIndex's node parsers and Docling's document model (the
    chunker imports them lazily) and pays their first-call costs (sentence tokenizer, regexes)."""
    import orjson
    from docling_core.types.doc import DoclingDocument

    from app.chunking import chunk_document

    docling_json = orjson.dumps(DoclingDocument(name="warm-up").export_to_dict())
    chunk_document(
        docling_json,
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
