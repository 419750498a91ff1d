"""Docling's ``document_timeout``: Docling stops and returns ``PARTIAL_SUCCESS`` with the pages it had;
the engine must report a Timeout (retryable, with the page count for the slice ladder), never accept
the truncated document. Real Docling (the native pipeline honours the same option)."""

from __future__ import annotations

import pytest

from app.convert.errors import ConversionFailure
from tests.conftest import CORPUS

pytestmark = pytest.mark.local_models

MULTI = CORPUS / "pdf" / "multi_page.pdf"  # 5 pages


def test_a_document_cut_short_by_doclings_timeout_is_a_timeout() -> None:
    from app.convert.engine import Engine

    with pytest.raises(ConversionFailure) as info:
        Engine(document_timeout=0.000001).convert(MULTI, "application/pdf", "native")
    failure = info.value
    assert failure.error_class == "Timeout" and failure.retryable and failure.page_count == 5
    assert "of 5 pages" in failure.message and "truncated document is not accepted" in failure.message
    whole = Engine(document_timeout=600).convert(MULTI, "application/pdf", "native")
    assert whole.page_count == 5 and not whole.warnings  # a generous limit changes nothing
