"""The recovery policy: a document that fails for time or memory is not retried the same way forever."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.convert import ConversionFailure, ConvertOptions, convert_file, convert_with_recovery
from app.convert.backends import modal_breaker
from app.convert.sniff import PDF
from tests.conftest import CORPUS
from tests.convert_support import timeout_above
from tests.modal_standin import deploy

__all__ = ["deploy"]  # the fixture

pytestmark = pytest.mark.local_models

MULTI = CORPUS / "pdf" / "multi_page.pdf"  # 5 pages
LOCAL = ConvertOptions(backend="local")
TINY = 0.02  # seconds: no conversion finishes in time


@pytest.fixture
def tiny_timeout_above(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Inject a tiny timeout into real local conversions of more than ``pages`` pages (or whole files)."""
    return timeout_above(monkeypatch, TINY)


async def test_time_failure_is_retried_in_page_slices(tiny_timeout_above: Any) -> None:
    whole = await convert_file(MULTI, filename="m.pdf", media_type=PDF, options=LOCAL)
    seen = tiny_timeout_above(2)
    out = await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=LOCAL)
    # whole (killed) → 1-3 (killed) → 1-2, 3 → 4-5
    assert seen == [None, (1, 3), (1, 2), (3, 3), (4, 5)]
    assert out.slices == [[1, 2], [3, 3], [4, 5]]
    assert out.page_count == 5 and out.backend == "local"
    assert out.markdown == whole.markdown  # the merged slices are the same document
    doc = json.loads(out.docling_json)
    assert sorted(int(p) for p in doc["pages"]) == [1, 2, 3, 4, 5]
    assert out.cpu_s > 0 and out.total_s >= out.convert_s


async def test_nothing_works_ends_in_a_final_failure(tiny_timeout_above: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tiny_timeout_above(0)  # even a single page times out
    with pytest.raises(ConversionFailure) as info:
        await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=LOCAL)
    failure = info.value
    assert seen == [None, (1, 3), (1, 2), (1, 1)]  # halves down to one page, then stops
    assert failure.error_class == "Timeout" and failure.final and not failure.retryable
    assert "gave up after 4 attempts" in failure.message and "local page 1: Timeout" in failure.message
    assert len(failure.attempts) == 4
    monkeypatch.undo()  # no more injected timeouts: the converter still works for the next document
    out = await convert_file(MULTI, filename="m.pdf", media_type=PDF, options=LOCAL)
    assert out.page_count == 5


async def test_attempt_budget_is_respected(tiny_timeout_above: Any) -> None:
    seen = tiny_timeout_above(0)
    with pytest.raises(ConversionFailure) as info:
        await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=LOCAL, max_attempts=2)
    assert info.value.final and len(seen) == 3  # whole + 2 slice attempts


async def test_input_failures_are_final_at_once(tiny_timeout_above: Any) -> None:
    seen = tiny_timeout_above(100)
    with pytest.raises(ConversionFailure) as info:
        await convert_with_recovery(
            CORPUS / "pdf" / "password_protected_2206.01062_pg3.pdf", filename="p.pdf", media_type=PDF, options=LOCAL
        )
    assert info.value.error_class == "PasswordProtected" and info.value.final and len(seen) == 1


async def test_single_file_formats_go_to_the_other_backend(tiny_timeout_above: Any, deploy: Any) -> None:
    """Local times out on a DOCX (no pages to slice): with Modal configured, Modal converts it (the one
    case a document that needs no GPU is sent there: its larger container is the last thing to try)."""
    fake = deploy()
    tiny_timeout_above(0)
    docx = CORPUS / "docx" / "word_sample.docx"
    out = await convert_with_recovery(docx, filename="w.docx", media_type="application/octet-stream", options=LOCAL)
    assert out.backend == "modal" and fake.documents_sent == [1] and out.markdown.strip()


def modal_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Modal configured (tokens set) but its server cannot be reached; the breaker starts closed."""
    import modal
    import modal.exception as mex

    def from_name(*_: Any, **__: Any) -> Any:
        raise mex.ConnectionError("Could not connect to the Modal server.")

    monkeypatch.setattr(modal.Cls, "from_name", from_name)
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    modal_breaker.reset()


async def test_after_a_modal_fallback_local_slices_are_next(
    tiny_timeout_above: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Modal down → local whole document times out → not Modal again, but local page slices."""
    modal_unreachable(monkeypatch)
    seen = tiny_timeout_above(3)
    try:
        out = await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=ConvertOptions())
    finally:
        modal_breaker.reset()
    assert seen == [None, (1, 3), (4, 5)]
    assert out.backend == "local" and out.slices == [[1, 3], [4, 5]]
    assert out.fallback is not None and out.fallback["reason"] == "unreachable"


async def test_final_failure_after_a_modal_fallback_still_says_why_modal_was_not_used(
    tiny_timeout_above: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    modal_unreachable(monkeypatch)
    tiny_timeout_above(0)  # local times out at every size
    try:
        with pytest.raises(ConversionFailure) as info:
            await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=ConvertOptions())
    finally:
        modal_breaker.reset()
    failure = info.value
    assert failure.final and len(failure.attempts) > 1
    assert failure.fallback is not None and failure.fallback["reason"] == "unreachable"
