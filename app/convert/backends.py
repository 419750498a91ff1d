"""Which backend converts a document: the deployed Modal converter (GPU, standard pipeline) or local
Docling, with a fallback to local when Modal is unreachable, unauthenticated or times out.

Only documents that need the standard pipeline go to Modal (``runs_on_modal``: PDFs unless the native
pipeline is asked for, images); everything else converts locally even when the backend is Modal, so no
office file or Markdown runs on the CPU of a billed GPU container. Modal-bound documents of concurrent
callers share calls (``app.convert.batcher``).

``convert_file`` and ``convert_batch`` are the stage's entry points (see ``__init__``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from app.convert.batcher import batcher
from app.convert.errors import ConversionFailure
from app.convert.local import convert_local
from app.convert.modal_client import (
    APP_NAME,
    CLASS_NAME,
    ModalItem,
    ModalUnavailable,
    classify_modal_error,
    modal_breaker,
)
from app.convert.options import ConversionOutput, ConvertOptions, ModalUsage, runs_on_modal
from app.convert.sniff import UNKNOWN, sniff_path, unsupported

__all__ = [
    "APP_NAME",
    "CLASS_NAME",
    "ModalUnavailable",
    "check_input",
    "classify_modal_error",
    "convert_batch",
    "convert_file",
    "modal_breaker",
]

log = logging.getLogger(__name__)

Result = ConversionOutput | ConversionFailure


def check_input(path: Path, filename: str, media_type: str | None) -> str:
    """The media type to convert as, from the content; raises for empty or unsupported files."""
    size = path.stat().st_size
    sniffed = sniff_path(path, filename) if size else UNKNOWN
    refused = unsupported(sniffed, filename, size, media_type)
    if refused is not None:
        raise ConversionFailure(refused[0], refused[1], retryable=False)
    if media_type and media_type != sniffed:
        log.info(
            "converting by content, not by declared type",
            extra={"file_name": filename, "declared": media_type, "sniffed": sniffed},
        )
    return sniffed


async def convert_file(
    path: Path,
    *,
    filename: str,
    media_type: str,
    options: ConvertOptions,
    page_range: tuple[int, int] | None = None,
) -> ConversionOutput:
    """Convert one file on the configured backend; raises ``ConversionFailure`` with a clear reason."""
    [result] = await convert_batch([(path, filename, media_type)], options, page_range=page_range)
    if isinstance(result, ConversionFailure):
        raise result
    return result


async def convert_batch(
    items: list[tuple[Path, str, str]], options: ConvertOptions, page_range: tuple[int, int] | None = None
) -> list[Result]:
    """Convert several files; those bound for Modal share calls (one container start) with each other
    and with any other caller's documents in flight at the same time."""
    started = time.perf_counter()
    results: list[Result | None] = [None] * len(items)
    todo: list[tuple[int, Path, str, str]] = []
    for i, (path, filename, media_type) in enumerate(items):
        try:
            todo.append((i, path, filename, check_input(path, filename, media_type)))
        except ConversionFailure as failure:
            results[i] = failure
    on_modal = options.resolved_backend() == "modal"
    done = await asyncio.gather(
        *(
            _modal_or_local(path, filename, media, options, page_range)
            if on_modal and (options.any_type_on_modal or runs_on_modal(media, options.pipeline))
            else _local(path, media, options, page_range)
            for _, path, filename, media in todo
        )
    )
    for (i, *_), result in zip(todo, done, strict=True):
        results[i] = result
    log.debug("batch converted", extra={"documents": len(items), "seconds": time.perf_counter() - started})
    return [r for r in results if r is not None]


async def _local(
    path: Path,
    media_type: str,
    options: ConvertOptions,
    page_range: tuple[int, int] | None,
    fallback: dict[str, str] | None = None,
    usage: ModalUsage | None = None,
) -> Result:
    """Local Docling; ``fallback``/``usage``: why Modal was not used, and what its failed call cost."""
    started = time.perf_counter()
    try:
        output = await convert_local(path, media_type, options, page_range)
    except ConversionFailure as failure:
        failure.backend = "local"
        failure.fallback = fallback
        failure.modal_usage = [usage] if usage else []
        return failure
    output.fallback = fallback
    output.total_s = time.perf_counter() - started
    output.modal_usage = [usage] if usage else []
    return output


async def _modal_or_local(
    path: Path, filename: str, media_type: str, options: ConvertOptions, page_range: tuple[int, int] | None
) -> Result:
    item = ModalItem(path, filename, media_type, options.pipeline, page_range)
    outcome = await batcher().submit(item, options.modal_timeout_s, options.gpu.upper())
    if not isinstance(outcome, ModalUnavailable):
        return outcome
    log.warning(
        "Modal unavailable, converting locally",
        extra={"reason": outcome.reason, "detail": outcome.message, "file_name": filename},
    )
    return await _local(path, media_type, options, page_range, outcome.fallback(), outcome.usage)
