"""Which backend converts a document: the deployed Modal function (GPU, standard pipeline) or local
Docling, with a fallback to local when Modal is unreachable, unauthenticated or times out.

``convert_file`` and ``convert_batch`` are the stage's entry points (see ``__init__``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from app.convert.errors import ConversionFailure
from app.convert.local import convert_local
from app.convert.options import ConversionOutput, ConvertOptions
from app.convert.sniff import UNKNOWN, sniff_path, unsupported

log = logging.getLogger(__name__)

APP_NAME = "chronos-docling"
FUNCTION_NAME = "convert_batch"
MODAL_RETRY_AFTER_S = float(os.environ.get("CHRONOS_MODAL_RETRY_AFTER", "300"))
"""After Modal was unreachable or refused our token, go straight to local for this long."""
MODAL_BATCH_DOCS = int(os.environ.get("CHRONOS_MODAL_BATCH", "16"))
MODAL_BATCH_BYTES = 64 * 1024 * 1024

Result = ConversionOutput | ConversionFailure


class ModalUnavailable(Exception):
    """The Modal call failed as a whole; ``reason`` is one of unreachable|unauthenticated|timeout|error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def fallback(self) -> dict[str, str]:
        return {"from_backend": "modal", "reason": self.reason, "message": self.message}


class _Breaker:
    """Remembers a Modal outage so every document does not wait for the same connection error."""

    def __init__(self) -> None:
        self.until = 0.0
        self.error: ModalUnavailable | None = None

    def check(self) -> None:
        if self.error is not None and time.monotonic() < self.until:
            left = self.until - time.monotonic()
            raise ModalUnavailable(
                self.error.reason, f"{self.error.message} (not retried for another {left:.0f} s)"
            )

    def trip(self, error: ModalUnavailable) -> None:
        if error.reason in ("unreachable", "unauthenticated"):
            self.error, self.until = error, time.monotonic() + MODAL_RETRY_AFTER_S

    def reset(self) -> None:
        self.error, self.until = None, 0.0


modal_breaker = _Breaker()


def _lookup_function() -> Any:
    """The deployed function, by name (``modal deploy app/modal_app.py`` creates it)."""
    import modal

    return modal.Function.from_name(APP_NAME, FUNCTION_NAME)


MODAL_CONNECT_TIMEOUT_S = 20.0
"""How long looking the function up (hydrating it) may take. The Modal client retries a refused or
silent server on its own, so without this an outage would look like a timeout of the whole call
(``modal_timeout_s``, 10 minutes by default) and never trip the breaker."""


async def _connect(function: Any, timeout_s: float) -> None:
    """Hydrate the deployed function within ``timeout_s``; a server that cannot be reached in that
    time is "unreachable" (the breaker then sends conversions straight to local for a while)."""
    hydrate = getattr(function, "hydrate", None)
    if hydrate is None or not hasattr(hydrate, "aio"):
        return  # a stand-in without a lookup step
    try:
        await asyncio.wait_for(hydrate.aio(), timeout=timeout_s)
    except TimeoutError as exc:
        raise ModalUnavailable(
            "unreachable", f"could not reach Modal within {timeout_s:g} s (looking up {APP_NAME}.{FUNCTION_NAME})"
        ) from exc


def classify_modal_error(exc: BaseException) -> ModalUnavailable:
    import modal.exception as mex

    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    if isinstance(exc, mex.AuthError | mex.PermissionDeniedError):
        return ModalUnavailable(
            "unauthenticated", f"Modal rejected the credentials ({detail}); check MODAL_TOKEN_ID/MODAL_TOKEN_SECRET"
        )
    if isinstance(exc, mex.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return ModalUnavailable("timeout", f"the Modal call timed out ({detail})")
    if isinstance(exc, mex.ConnectionError | ConnectionError | OSError):
        return ModalUnavailable("unreachable", f"could not reach Modal ({detail})")
    if isinstance(exc, mex.NotFoundError):
        return ModalUnavailable(
            "error", f"the Modal app {APP_NAME!r} is not deployed ({detail}); run `modal deploy app/modal_app.py`"
        )
    return ModalUnavailable("error", f"the Modal call failed ({detail})")


def check_input(path: Path, filename: str, media_type: str | None) -> str:
    """The media type to convert as, from the content; raises for empty or unsupported files."""
    size = path.stat().st_size
    sniffed = sniff_path(path, filename) if size else UNKNOWN
    refused = unsupported(sniffed, filename, size, media_type)
    if refused is not None:
        raise ConversionFailure(refused[0], refused[1], retryable=False)
    if media_type and media_type != sniffed:
        log.info("converting by content, not by declared type",
                 extra={"file_name": filename, "declared": media_type, "sniffed": sniffed})
    return sniffed


async def convert_file(
    path: Path, *, filename: str, media_type: str, options: ConvertOptions,
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
    """Convert several files; on Modal they share one call (one container start) per batch."""
    started = time.perf_counter()
    results: list[Result | None] = [None] * len(items)
    todo: list[tuple[int, Path, str, str]] = []
    for i, (path, filename, media_type) in enumerate(items):
        try:
            todo.append((i, path, filename, check_input(path, filename, media_type)))
        except ConversionFailure as failure:
            results[i] = failure
    if options.resolved_backend() == "modal":
        for i, result in await _modal_or_local(todo, options, page_range):
            results[i] = result
    else:
        done = await asyncio.gather(*(_local(path, media, options, page_range) for _, path, _, media in todo))
        for (i, *_), result in zip(todo, done, strict=True):
            results[i] = result
    log.debug("batch converted", extra={"documents": len(items), "seconds": time.perf_counter() - started})
    return [r for r in results if r is not None]


async def _local(
    path: Path, media_type: str, options: ConvertOptions, page_range: tuple[int, int] | None,
    fallback: dict[str, str] | None = None,
) -> Result:
    started = time.perf_counter()
    try:
        output = await convert_local(path, media_type, options, page_range)
    except ConversionFailure as failure:
        failure.backend = "local"
        failure.fallback = fallback
        return failure
    output.fallback = fallback
    output.total_s = time.perf_counter() - started
    return output


async def _modal_or_local(
    todo: list[tuple[int, Path, str, str]], options: ConvertOptions, page_range: tuple[int, int] | None
) -> list[tuple[int, Result]]:
    out: list[tuple[int, Result]] = []
    for batch in _batches(todo):
        try:
            results = await _call_modal(batch, options, page_range)
            out.extend(zip([i for i, *_ in batch], results, strict=True))
        except ModalUnavailable as down:
            log.warning("Modal unavailable, converting locally", extra={"reason": down.reason,
                                                                         "detail": down.message})
            local = await asyncio.gather(*(_local(p, m, options, page_range, down.fallback())
                                           for _, p, _, m in batch))
            out.extend(zip([i for i, *_ in batch], local, strict=True))
    return out


def _batches(todo: list[tuple[int, Path, str, str]]) -> list[list[tuple[int, Path, str, str]]]:
    batches: list[list[tuple[int, Path, str, str]]] = []
    size = 0
    for item in todo:
        item_size = item[1].stat().st_size
        if not batches or len(batches[-1]) >= MODAL_BATCH_DOCS or size + item_size > MODAL_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item_size
    return batches


async def _call_modal(
    batch: list[tuple[int, Path, str, str]], options: ConvertOptions, page_range: tuple[int, int] | None
) -> list[Result]:
    modal_breaker.check()
    payload = [
        {"filename": filename, "media_type": media, "data": path.read_bytes(), "pipeline": options.pipeline,
         "page_range": list(page_range) if page_range else None}
        for _, path, filename, media in batch
    ]
    started = time.perf_counter()
    try:
        function = _lookup_function()
        await _connect(function, min(MODAL_CONNECT_TIMEOUT_S, options.modal_timeout_s))
        replies = await asyncio.wait_for(function.remote.aio(payload), timeout=options.modal_timeout_s)
    except ImportError as exc:
        raise ModalUnavailable(
            "error", f"the modal package is not installed ({exc}); install the `cloud` extra"
        ) from exc
    except Exception as exc:
        down = exc if isinstance(exc, ModalUnavailable) else classify_modal_error(exc)
        modal_breaker.trip(down)
        raise down from exc
    if not isinstance(replies, list) or len(replies) != len(batch):
        raise ModalUnavailable("error", f"the Modal function returned {type(replies).__name__} for {len(batch)} "
                                        "documents; redeploy with `modal deploy app/modal_app.py`")
    total_s = time.perf_counter() - started
    return [_from_modal(reply, options, total_s, media) for reply, (_, _, _, media) in zip(replies, batch, strict=True)]


def _from_modal(reply: dict[str, Any], options: ConvertOptions, total_s: float, media_type: str) -> Result:
    if not reply.get("ok"):
        return ConversionFailure.from_dict(reply.get("failure") or {}, backend="modal")
    return ConversionOutput(
        docling_json=reply["docling_json"], markdown=reply["markdown"], page_count=int(reply["page_count"]),
        backend="modal", pipeline=reply["pipeline"], docling_version=reply["docling_version"],
        convert_s=float(reply["convert_s"]), total_s=total_s, cpu_s=0.0, gpu_s=float(reply.get("gpu_s", 0.0)),
        gpu=reply.get("gpu") or options.gpu, media_type=media_type, warnings=list(reply.get("warnings") or []),
        slices=[list(reply["page_range"])] if reply.get("page_range") else None,
    )
