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

**Budget.** The whole ladder shares one converter-time budget per document
(``options.total_budget_s()``: ``CHRONOS_CONVERT_BUDGET``, default twice the per-document limit):
each attempt's limit is cut to what is left of it, and when less than ``MIN_ATTEMPT_S`` is left the
ladder stops with a final ``Timeout`` saying so. A local attempt is charged the time it held its
converter process (not the time it waited for one), a Modal attempt its wall time.

**Before any converter.** ``check_input_or_final`` sniffs the content (empty and unsupported files fail
here) and runs the hostile-input checks of ``app.convert.guards`` (HTML nesting, Office packages that
expand past their limit): such files never reach a converter process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from app.convert import errors, guards
from app.convert.backends import check_input, convert_file
from app.convert.errors import ConversionFailure
from app.convert.local import convert_local, merge_local, pdf_page_count
from app.convert.options import ConversionOutput, ConvertOptions, ModalUsage, modal_configured, runs_on_modal
from app.convert.sniff import PDF

log = logging.getLogger(__name__)


MIN_ATTEMPT_S = 1.0
"""An attempt is not started with less budget than this (or the per-document limit, if smaller)."""


class _BudgetSpent(ConversionFailure):
    """The ladder stopped because the document's converter-time budget is spent."""


@dataclasses.dataclass
class _Budget:
    """Converter time left for one document, and the conversions the page-slice ladder may still make."""

    total_s: float
    conversions: int
    spent_s: float = 0.0

    def left_s(self) -> float:
        return self.total_s - self.spent_s

    def options_for(self, options: ConvertOptions) -> ConvertOptions:
        """The options of the next attempt, its limits cut to what is left; raises when it is spent
        (the first attempt always runs, within the budget)."""
        left = self.left_s()
        if self.spent_s > 0 and left < min(MIN_ATTEMPT_S, options.timeout_s):
            raise _BudgetSpent(
                errors.TIMEOUT,
                f"the document's converter-time budget of {self.total_s:g} s is spent ({self.spent_s:.1f} s "
                "used; raise CHRONOS_CONVERT_BUDGET to give such documents longer)",
            )
        return dataclasses.replace(
            options, timeout_s=min(options.timeout_s, left), modal_timeout_s=min(options.modal_timeout_s, left)
        )

    def charge(self, held_s: float, wall_s: float) -> None:
        self.spent_s += held_s if held_s > 0 else wall_s


async def convert_with_recovery(
    path: Path, *, filename: str, media_type: str, options: ConvertOptions, max_attempts: int = 32
) -> ConversionOutput:
    started = time.perf_counter()
    attempts: list[str] = []
    paid: list[ModalUsage] = []  # Modal time of attempts that did not produce the result
    media_type = await check_input_or_final(path, filename, media_type)
    backend = options.resolved_backend()
    budget = _Budget(options.total_budget_s(), max_attempts)
    try:
        return await _attempt(path, filename, media_type, budget.options_for(options), budget)
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
        try:
            retry = dataclasses.replace(budget.options_for(options), backend=other, any_type_on_modal=not sliceable)
        except ConversionFailure as spent:
            raise _finish(_after(spent, last, page_count), attempts, final=True, paid=paid) from None
        try:
            output = await _attempt(path, filename, media_type, retry, budget)
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

    if sliceable and page_count:
        try:
            mid = (page_count + 1) // 2
            parts = await _slices(path, media_type, options, 1, mid, budget, attempts)
            parts += await _slices(path, media_type, options, mid + 1, page_count, budget, attempts)
        except ConversionFailure as failure:
            raise _finish(_after(failure, last, page_count), attempts, final=True, paid=paid) from None
        output = await _merge(parts, options)
        output.total_s = time.perf_counter() - started
        output.fallback = output.fallback or last.fallback
        output.modal_usage = paid
        log.info("converted in page slices", extra={"file_name": filename, "slices": output.slices})
        return output
    raise _finish(last, attempts, final=True, paid=paid)


def _after(failure: ConversionFailure, last: ConversionFailure, page_count: int | None) -> ConversionFailure:
    """A later failure keeps what the first said: why Modal was not used, the page count."""
    failure.fallback = failure.fallback or last.fallback
    if failure.page_count is None:
        failure.page_count = page_count
    return failure


async def _attempt(
    path: Path,
    filename: str,
    media_type: str,
    options: ConvertOptions,
    budget: _Budget,
    page_range: tuple[int, int] | None = None,
) -> ConversionOutput:
    """One conversion, charged to the budget whatever its outcome."""
    started = time.perf_counter()
    try:
        if page_range is not None:
            output = await convert_local(path, media_type, options, page_range=page_range)
        else:
            output = await convert_file(path, filename=filename, media_type=media_type, options=options)
    except ConversionFailure as failure:
        budget.charge(failure.held_s, time.perf_counter() - started)
        raise
    budget.charge(output.held_s, time.perf_counter() - started)
    return output


async def check_input_or_final(path: Path, filename: str, media_type: str) -> str:
    """The media type to convert as; raises a final failure for input no converter should be given."""
    try:
        sniffed = check_input(path, filename, media_type)
        await asyncio.to_thread(guards.check, path, filename, sniffed)
    except ConversionFailure as failure:
        failure.final = True
        raise
    return sniffed


def _other_backend(ran_on: str) -> str | None:
    if ran_on == "modal":
        return "local"
    from app.convert.modal_client import modal_breaker

    if modal_configured() and modal_breaker.error is None:
        return "modal"
    return None


async def _slices(
    path: Path,
    media_type: str,
    options: ConvertOptions,
    first: int,
    last: int,
    budget: _Budget,
    attempts: list[str],
) -> list[ConversionOutput]:
    if budget.conversions <= 0:
        raise ConversionFailure(
            errors.TIMEOUT if "Timeout" in attempts[-1] else errors.MEMORY_LIMIT,
            "gave up: the page-slice attempt budget is spent",
        )
    budget.conversions -= 1
    label = f"local pages {first}-{last}" if first != last else f"local page {first}"
    limited = budget.options_for(options)  # a spent budget ends the ladder here, not in smaller slices
    try:
        return [await _attempt(path, "", media_type, limited, budget, (first, last))]
    except ConversionFailure as failure:
        attempts.append(f"{label}: {_short(failure)}")
        if failure.error_class not in errors.RESOURCE_LIMITS or first == last:
            raise
    mid = (first + last) // 2
    return await _slices(path, media_type, options, first, mid, budget, attempts) + await _slices(
        path, media_type, options, mid + 1, last, budget, attempts
    )


async def _merge(parts: list[ConversionOutput], options: ConvertOptions) -> ConversionOutput:
    slices = [s for p in parts for s in (p.slices or [])]
    docling_json, markdown, pages, merge_cpu = await merge_local([p.docling_json for p in parts], options)
    first = parts[0]
    return ConversionOutput(
        docling_json=docling_json,
        markdown=markdown,
        page_count=pages,
        backend="local",
        pipeline=first.pipeline,
        docling_version=first.docling_version,
        convert_s=sum(p.convert_s for p in parts),
        total_s=0.0,
        cpu_s=sum(p.cpu_s for p in parts) + merge_cpu,
        gpu_s=0.0,
        gpu=None,
        fallback=first.fallback,
        slices=slices,
        media_type=first.media_type,
        warnings=[w for p in parts for w in p.warnings],
    )


def _short(failure: ConversionFailure) -> str:
    return f"{failure.error_class} ({failure.message[:160]})"


def _finish(
    failure: ConversionFailure, attempts: list[str], final: bool, paid: list[ModalUsage] | None = None
) -> ConversionFailure:
    if len(attempts) <= 1 and not isinstance(failure, _BudgetSpent):
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
