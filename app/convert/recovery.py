"""What to do when a document fails for time or memory: never the same way forever.

Policy (``convert_with_recovery``), each step only while the failure is Timeout or MemoryLimit:
1. convert as asked (``options.backend``);
2. on the other backend: Modal → local always; local → Modal only when Modal is configured and was not
   just found unavailable (skipped when Modal already fell back to local for this document);
3. PDFs of more than one page: locally in page slices, halving every slice that fails for time or
   memory down to single pages (at most ``max_attempts`` conversions), then merging the slices into
   one DoclingDocument;
4. when nothing worked: ``ConversionFailure(final=True)`` listing every attempt, so the pipeline can
   quarantine the document with the reason.
Failures that are properties of the input (password, corrupt, unsupported, empty, ...) are returned
at once; ``final`` is then ``not retryable``.

Modal container time billed on the way (a Modal attempt that failed or was cancelled) is carried into
the result or the final failure (``modal_usage``), so the stage records its cost whatever the outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from app.convert import errors
from app.convert.backends import check_input, convert_file
from app.convert.errors import ConversionFailure
from app.convert.local import convert_local, merge_local, pdf_page_count
from app.convert.options import ConversionOutput, ConvertOptions, ModalUsage, modal_configured, runs_on_modal
from app.convert.sniff import PDF

log = logging.getLogger(__name__)


async def convert_with_recovery(
    path: Path, *, filename: str, media_type: str, options: ConvertOptions, max_attempts: int = 32
) -> ConversionOutput:
    started = time.perf_counter()
    attempts: list[str] = []
    paid: list[ModalUsage] = []  # Modal time of attempts that did not produce the result
    media_type = check_input_or_final(path, filename, media_type)
    backend = options.resolved_backend()
    try:
        return await convert_file(path, filename=filename, media_type=media_type, options=options)
    except ConversionFailure as failure:
        last = failure
        paid += failure.modal_usage
        attempts.append(f"{failure.backend or backend} whole document: {_short(failure)}")
        if failure.error_class not in errors.RESOURCE_LIMITS:
            raise _finish(failure, attempts, final=not failure.retryable, paid=paid) from None
    page_count = last.page_count
    ran_on = last.backend or backend  # Modal may have fallen back to local already
    if page_count is None and media_type == PDF:
        page_count = await pdf_page_count(path, options)

    other = None if last.fallback else _other_backend(ran_on)  # after a fallback both were tried
    # A file with no pages to slice may try Modal's larger container even though it needs no GPU; a
    # sliceable one that needs no GPU goes straight to page slices (on "modal" it would run here again).
    sliceable = media_type == PDF and bool(page_count and page_count > 1)
    if other == "modal" and sliceable and not runs_on_modal(media_type, options.pipeline):
        other = None
    if other is not None:
        retry = dataclasses.replace(options, backend=other, any_type_on_modal=not sliceable)
        try:
            output = await convert_file(path, filename=filename, media_type=media_type, options=retry)
            output.total_s = time.perf_counter() - started
            output.modal_usage = paid + output.modal_usage
            return output
        except ConversionFailure as failure:
            paid += failure.modal_usage
            attempts.append(f"{failure.backend or other} whole document: {_short(failure)}")
            page_count = page_count or failure.page_count
            if failure.error_class not in errors.RESOURCE_LIMITS:
                raise _finish(failure, attempts, final=not failure.retryable, paid=paid) from None
            last = failure

    if media_type == PDF and page_count and page_count > 1:
        budget = [max_attempts]
        try:
            mid = (page_count + 1) // 2
            parts = await _slices(path, media_type, options, 1, mid, budget, attempts)
            parts += await _slices(path, media_type, options, mid + 1, page_count, budget, attempts)
        except ConversionFailure as failure:
            failure.fallback = failure.fallback or last.fallback
            raise _finish(failure, attempts, final=True, paid=paid) from None
        output = await _merge(parts, options)
        output.total_s = time.perf_counter() - started
        output.fallback = output.fallback or last.fallback
        output.modal_usage = paid
        log.info("converted in page slices", extra={"file_name": filename, "slices": output.slices})
        return output
    raise _finish(last, attempts, final=True, paid=paid)


def check_input_or_final(path: Path, filename: str, media_type: str) -> str:
    try:
        return check_input(path, filename, media_type)
    except ConversionFailure as failure:
        failure.final = True
        raise


def _other_backend(ran_on: str) -> str | None:
    if ran_on == "modal":
        return "local"
    from app.convert.modal_client import modal_breaker

    if modal_configured() and modal_breaker.error is None:
        return "modal"
    return None


async def _slices(
    path: Path, media_type: str, options: ConvertOptions, first: int, last: int, budget: list[int],
    attempts: list[str],
) -> list[ConversionOutput]:
    if budget[0] <= 0:
        raise ConversionFailure(errors.TIMEOUT if "Timeout" in attempts[-1] else errors.MEMORY_LIMIT,
                                "gave up: the page-slice attempt budget is spent")
    budget[0] -= 1
    label = f"local pages {first}-{last}" if first != last else f"local page {first}"
    try:
        return [await convert_local(path, media_type, options, page_range=(first, last))]
    except ConversionFailure as failure:
        attempts.append(f"{label}: {_short(failure)}")
        if failure.error_class not in errors.RESOURCE_LIMITS or first == last:
            raise
    mid = (first + last) // 2
    return (await _slices(path, media_type, options, first, mid, budget, attempts)
            + await _slices(path, media_type, options, mid + 1, last, budget, attempts))


async def _merge(parts: list[ConversionOutput], options: ConvertOptions) -> ConversionOutput:
    slices = [s for p in parts for s in (p.slices or [])]
    docling_json, markdown, pages, merge_cpu = await merge_local([p.docling_json for p in parts], options)
    first = parts[0]
    return ConversionOutput(
        docling_json=docling_json, markdown=markdown, page_count=pages, backend="local",
        pipeline=first.pipeline, docling_version=first.docling_version,
        convert_s=sum(p.convert_s for p in parts), total_s=0.0, cpu_s=sum(p.cpu_s for p in parts) + merge_cpu,
        gpu_s=0.0, gpu=None, fallback=first.fallback, slices=slices, media_type=first.media_type,
        warnings=[w for p in parts for w in p.warnings],
    )


def _short(failure: ConversionFailure) -> str:
    return f"{failure.error_class} ({failure.message[:160]})"


def _finish(
    failure: ConversionFailure, attempts: list[str], final: bool, paid: list[ModalUsage] | None = None
) -> ConversionFailure:
    if len(attempts) <= 1:
        failure.final = final
        failure.attempts = attempts
        failure.modal_usage = list(paid or [])
        if final and failure.retryable:
            failure.retryable = False
        return failure
    result = ConversionFailure(
        failure.error_class,
        f"{failure.message}; gave up after {len(attempts)} attempts: "
        + "; ".join(a.split(" (", 1)[0] for a in attempts),
        retryable=False if final else failure.retryable,
        backend=failure.backend,
        page_count=failure.page_count,
        final=final,
        attempts=attempts,
    )
    result.fallback = failure.fallback  # why Modal was not used, if it was not: kept for the event
    result.modal_usage = list(paid or [])
    return result
