"""Hostile input is refused before a converter sees it (app.convert.guards), with the reason; the
converter-time budget stops the recovery ladder; text that quotes ``%PDF-`` is not sniffed as a PDF."""

from __future__ import annotations

import dataclasses
import itertools
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.convert import ConversionFailure, ConvertOptions, convert_with_recovery, guards
from app.convert.sniff import HTML, MARKDOWN, PDF, sniff_media_type, sniff_path
from tests.conftest import CORPUS
from tests.convert_support import intercept_conversions

MULTI = CORPUS / "pdf" / "multi_page.pdf"  # 5 pages
LOCAL = ConvertOptions(backend="local")


def nested(tag: str, depth: int, close: bool = True) -> bytes:
    body = f"<{tag}>" * depth + "deep text" + (f"</{tag}>" * depth if close else "")
    return f"<!doctype html><html><body><h1>Deep</h1>{body}</body></html>".encode()


@pytest.fixture
def converter_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, int] | None, float]]:
    """Every conversion a converter process is asked for: (media type, page range, time limit)."""
    calls: list[tuple[str, tuple[int, int] | None, float]] = []

    def record(
        path: Path, media_type: str, options: ConvertOptions, page_range: tuple[int, int] | None, cancel: object
    ) -> ConvertOptions:
        calls.append((media_type, page_range, options.timeout_s))
        return options

    intercept_conversions(monkeypatch, record)
    return calls


@pytest.mark.local_models
async def test_the_550_kb_html_nested_50000_deep_fails_before_any_converter(
    tmp_path: Path, converter_calls: list[Any]
) -> None:
    """The issue's upload: it held the only converter for the whole 300 s limit. Now it never gets one."""
    path = tmp_path / "deep.html"
    path.write_bytes(nested("div", 50_000))
    assert 540_000 < path.stat().st_size < 560_000
    with pytest.raises(ConversionFailure) as info:
        await convert_with_recovery(path, filename="deep.html", media_type=HTML, options=LOCAL)
    failure = info.value
    assert failure.error_class == "NestingTooDeep" and failure.final and not failure.retryable
    assert "'deep.html' nests HTML elements more than 256 deep" in failure.message
    assert "flatten the markup" in failure.message
    assert converter_calls == []


def test_unclosed_elements_are_bounded_too(tmp_path: Path) -> None:
    """<li> without </li>: a browser closes each at the next one (depth 3), but html.parser keeps them
    all open and Docling re-nests them one by one (10,000: 41 s measured here)."""
    many, few = tmp_path / "many.html", tmp_path / "few.html"
    many.write_bytes(nested("li", 10_000, close=False))
    few.write_bytes(nested("li", 2_000, close=False))
    assert guards.html_depth(few) <= 4  # html, body, li (and the heading's level)
    with pytest.raises(ConversionFailure) as info:
        guards.check(many, "many.html", HTML)
    assert info.value.error_class == "NestingTooDeep"
    assert "more than 4096 HTML elements open at once" in info.value.message


def test_real_html_passes_and_depth_is_what_a_browser_builds(tmp_path: Path) -> None:
    for path in sorted((CORPUS / "html").glob("*.html")):
        guards.check(path, path.name, HTML)  # raises for none of Docling's own test pages
    page = tmp_path / "page.html"
    page.write_bytes(
        b"<html><body><div><p>a<p>b<table><tr><td>1<td>2<tr><td>3</table>"
        b"<br><img src=x><ul><li>x<li>y</ul></div></body></html>"
    )
    # html > body > div > table > tr > td: <p>, <td>, <tr> and <li> close their open siblings
    assert guards.html_depth(page) == 6
    deep = tmp_path / "deep.html"
    deep.write_bytes(nested("div", 257))
    with pytest.raises(ConversionFailure):
        guards.check(deep, "deep.html", HTML)
    deep.write_bytes(nested("div", 250))
    guards.check(deep, "deep.html", HTML)


def test_an_office_package_that_expands_past_its_limit_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b"\0" * 4_000_000)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ConversionFailure) as info:
        guards.check_package(bomb, "bomb.docx", max_bytes=1_000_000)
    assert info.value.error_class == "ExpandsTooLarge" and not info.value.retryable
    assert "'bomb.docx'" in info.value.message and "expand to 4000008 bytes" in info.value.message
    guards.check(
        CORPUS / "docx" / "word_sample.docx",
        "w.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    )


@pytest.fixture
def every_attempt_times_out(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Real local conversions that all time out at once; records the limit each attempt was given."""
    limits: list[float] = []

    def tiny(
        path: Path, media_type: str, options: ConvertOptions, page_range: tuple[int, int] | None, cancel: object
    ) -> ConvertOptions:
        limits.append(options.timeout_s)
        return dataclasses.replace(options, timeout_s=0.02)

    intercept_conversions(monkeypatch, tiny)
    return limits


@pytest.mark.local_models
async def test_the_budget_stops_the_ladder(every_attempt_times_out: list[float]) -> None:
    """Without a budget this document goes whole → 1-3 → 1-2 → 1 (4 attempts, test_convert_recovery);
    with 0.03 s of converter time the first attempt spends it and the ladder stops, saying why."""
    options = dataclasses.replace(LOCAL, budget_s=0.03)
    with pytest.raises(ConversionFailure) as info:
        await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=options)
    failure = info.value
    assert every_attempt_times_out == [0.03]
    assert failure.error_class == "Timeout" and failure.final and not failure.retryable
    assert "converter-time budget of 0.03 s is spent" in failure.message
    assert "gave up after 1 attempts: local whole document" in failure.message
    assert failure.page_count == 5


@pytest.mark.local_models
async def test_every_attempt_gets_only_what_is_left_of_the_budget(every_attempt_times_out: list[float]) -> None:
    options = dataclasses.replace(LOCAL, budget_s=5.0)
    with pytest.raises(ConversionFailure):
        await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=options)
    limits = every_attempt_times_out
    assert len(limits) == 4 and limits[0] == 5.0  # the ladder ran its course within the budget
    assert all(later < earlier for earlier, later in itertools.pairwise(limits)), limits
    assert ConvertOptions(timeout_s=300).total_budget_s() == 600  # the default: twice the per-document limit


def test_text_that_quotes_the_pdf_header_is_not_a_pdf(tmp_path: Path) -> None:
    html = b"<html><head><title>Formats</title></head><body><p>A PDF file starts with %PDF-1.7 and "
    html += b"then objects such as 1 0 obj.</p>" + b"<p>filler</p>" * 200 + b"</body></html>"
    assert sniff_media_type(html, "formats.html") == HTML
    markdown = b"# PDF internals\n\nEvery file starts with a header line:\n\n%PDF-1.4\n\nthen the body.\n"
    assert sniff_media_type(markdown, "notes.md") == MARKDOWN
    pdf = MULTI.read_bytes()
    assert sniff_media_type(pdf[:65536]) == PDF
    # Junk before the header is still a PDF (readers accept it within the first KB): binary junk,
    # or a text line dumped in front of it.
    assert sniff_media_type(b"\x00\x05\x16\x07" * 32 + pdf[:65536]) == PDF
    mail = tmp_path / "attachment.pdf"
    mail.write_bytes(b"Content-Type: application/pdf\r\n\r\n" + pdf)
    assert sniff_path(mail) == PDF
