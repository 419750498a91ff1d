"""Media type from content: every corpus file, lying extensions, garbage, other containers."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from app.convert.sniff import (
    CSV,
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    PPTX,
    SUPPORTED_MEDIA_TYPES,
    TEXT,
    UNKNOWN,
    XLSX,
    ZIP,
    sniff_media_type,
    sniff_path,
)
from tests.conftest import CORPUS

EXPECTED = {"pdf": PDF, "docx": DOCX, "pptx": PPTX, "xlsx": XLSX, "html": HTML, "md": MARKDOWN, "csv": CSV}
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.parent.name in EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_file_is_sniffed_from_content(path: Path) -> None:
    expected = EXPECTED[path.parent.name]
    assert sniff_path(path) == expected
    # The pipeline passes the first bytes: a 64 KiB head is enough, with or without the name.
    assert sniff_media_type(path.read_bytes()[:65536], path.name) == expected


def test_the_extension_is_not_trusted() -> None:
    pdf = (CORPUS / "pdf" / "multi_page.pdf").read_bytes()[:65536]
    docx = (CORPUS / "docx" / "word_sample.docx").read_bytes()[:65536]
    assert sniff_media_type(pdf, "report.docx") == PDF
    assert sniff_media_type(docx, "report.pdf") == DOCX
    assert sniff_media_type(os.urandom(4096), "report.pdf") == UNKNOWN
    assert sniff_media_type(b"<html><body><p>hi</p></body></html>", "notes.csv") == HTML


def test_docx_with_an_embedded_workbook_is_a_docx() -> None:
    # drawingml.docx embeds an uncompressed .xlsx whose own central directory sits inside the head.
    path = CORPUS / "docx" / "drawingml.docx"
    assert sniff_media_type(path.read_bytes()[:65536]) == DOCX


def test_other_binaries_and_archives_are_not_documents() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(200)
    assert sniff_media_type(png, "scan.pdf") == "image/png"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "hello")
    assert sniff_media_type(buf.getvalue(), "archive.docx") == ZIP
    assert sniff_media_type(b"", "empty.pdf") == UNKNOWN
    for media_type in ("image/png", ZIP, UNKNOWN):
        assert media_type not in SUPPORTED_MEDIA_TYPES


def test_text_formats() -> None:
    assert sniff_media_type(b"# Title\n\nSome *text*.\n\n- a\n- b\n") == MARKDOWN
    assert sniff_media_type(b"name,age,city\nann,31,Oslo\nbob,42,Rome\n") == CSV
    assert sniff_media_type(b"a;b;c\n1;2;3\n4;5;6\n") == CSV
    assert sniff_media_type(b"| a | b |\n|---|---|\n| 1 | 2 |\n") == MARKDOWN
    assert sniff_media_type(b"Just a line of prose, nothing more.\nAnd another one.\n") == TEXT
    assert sniff_media_type("Grüße aus Köln\n".encode()) == TEXT
    assert sniff_media_type(b"Some text <signature>x</signature>\n", "stamp.md") == MARKDOWN
    assert sniff_media_type("\ufeff<!DOCTYPE html><html><p>x</p></html>".encode()) == HTML
