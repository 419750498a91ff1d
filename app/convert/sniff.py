"""Media type from content: magic bytes, ZIP member names, text heuristics. The extension only breaks
ties between text formats (CSV vs Markdown); it never makes a binary file look like a document."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import zipfile
from pathlib import Path

import filetype

log = logging.getLogger(__name__)

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML = "text/html"
MARKDOWN = "text/markdown"
CSV = "text/csv"
TEXT = "text/plain"  # converted through Docling's Markdown backend (plain text is valid Markdown)
ZIP = "application/zip"
XML = "application/xml"
UNKNOWN = "application/octet-stream"

SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset({PDF, DOCX, PPTX, XLSX, HTML, MARKDOWN, CSV, TEXT})
PAGINATED = frozenset({PDF})
SUPPORTED_NAMES = "PDF, DOCX, PPTX, XLSX, HTML, Markdown, CSV and plain text"


def unsupported(media_type: str, filename: str, size: int, declared: str | None = None) -> tuple[str, str] | None:
    """``(error_class, message)`` when a file of this content cannot be converted, else None: the one
    rule (and wording) for the API's refusal, the CLI's failure event and the converter's own check."""
    if size == 0:
        return "EmptyFile", f"{filename!r} is empty (0 bytes); nothing to convert"
    if media_type in SUPPORTED_MEDIA_TYPES:
        return None
    said = f" although it is declared as {declared}" if declared and declared != media_type else ""
    what = "not a recognised document format" if media_type in (UNKNOWN, "application/x-empty") else media_type
    return "UnsupportedMediaType", f"the content of {filename!r} is {what}{said}; Chronos converts {SUPPORTED_NAMES}"


HEAD_BYTES = 65536
"""How much of a file ``sniff_media_type`` wants; ZIP containers are read whole by ``sniff_path``."""

# First ZIP member directory that identifies an Office Open XML package.
_OOXML_DIRS = (("word/", DOCX), ("ppt/", PPTX), ("xl/", XLSX))
_HTML_TAG = re.compile(
    rb"<(!doctype\s+html|html|head|body|title|meta|div|p|table|h[1-6]|ul|ol|span|a|section|article)[\s>/]",
    re.IGNORECASE,
)
_MD_STRONG = re.compile(r"^(#{1,6}\s+\S|```|~~~|\|.*\|\s*$|\s*[-*_]{3,}\s*$)", re.MULTILINE)
_MD_WEAK = re.compile(
    r"(^\s*([-*+]|\d+[.)])\s+\S|^>\s|\[[^\]\n]+\]\([^)\n]+\)|\*\*[^*\n]+\*\*|`[^`\n]+`)", re.MULTILINE
)


def sniff_media_type(head: bytes, filename: str | None = None) -> str:
    """MIME type of a file from its first bytes (``HEAD_BYTES`` or more), or ``UNKNOWN``."""
    if not head:
        return UNKNOWN
    if _is_pdf(head):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(head)
    text = _as_text(head)
    if text is None:
        kind = filetype.guess(head)
        return str(kind.mime) if kind is not None else UNKNOWN
    return _sniff_text(text, filename)


_PDF_HEADER = re.compile(rb"%PDF-\d")
_PDF_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b")
_MARKUP = re.compile(rb"<[!?a-zA-Z/]")


def _is_pdf(head: bytes) -> bool:
    """The PDF header at the start, or (as PDF readers accept) within the first KB after some junk.
    After junk, a text document that merely quotes ``%PDF-`` (HTML, XML, Markdown about PDFs) is not
    taken for a PDF: the junk must hold no markup and PDF objects (``1 0 obj``) must follow."""
    match = _PDF_HEADER.search(head, 0, 1024)
    if match is None:
        return False
    prefix = head[: match.start()]
    if not prefix.strip(b" \t\r\n\x00\xef\xbb\xbf"):
        return True
    return _MARKUP.search(prefix) is None and _PDF_OBJECT.search(head, match.end()) is not None


def sniff_path(path: Path, filename: str | None = None) -> str:
    """Like ``sniff_media_type`` for a file on disk; ZIP packages are identified from their directory."""
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    media_type = sniff_media_type(head, filename or path.name)
    if media_type == ZIP:
        media_type = _sniff_zip_file(path)
    return media_type


def extension_for(media_type: str) -> str:
    return {
        PDF: "pdf",
        DOCX: "docx",
        PPTX: "pptx",
        XLSX: "xlsx",
        HTML: "html",
        MARKDOWN: "md",
        CSV: "csv",
        TEXT: "md",
    }.get(media_type, "bin")


def _sniff_zip(head: bytes) -> str:
    # Member names in file order from the local headers; the outer package's parts come first (an
    # embedded workbook inside a DOCX comes later, and its own directory may be the only one in head).
    names = _local_header_names(head)
    if not names:
        try:
            names = zipfile.ZipFile(io.BytesIO(head)).namelist()
        except zipfile.BadZipFile:
            return ZIP
    return _ooxml_from_names(names)


def _local_header_names(head: bytes) -> list[str]:
    """Member names from the local file headers in the first bytes of a ZIP archive."""
    names = []
    for match in re.finditer(rb"PK\x03\x04", head):
        start = match.start()
        if start + 30 > len(head):
            break
        name_len = int.from_bytes(head[start + 26 : start + 28], "little")
        names.append(head[start + 30 : start + 30 + name_len].decode("utf-8", "replace"))
    return names


def _sniff_zip_file(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            return _ooxml_from_names(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return ZIP


def _ooxml_from_names(names: list[str]) -> str:
    """The first member under word/, ppt/ or xl/ names the package (embedded parts come later)."""
    if "[Content_Types].xml" not in names[:3] and not any(n.startswith(("word/", "ppt/", "xl/")) for n in names):
        return ZIP
    for name in names:
        for prefix, media_type in _OOXML_DIRS:
            if name.startswith(prefix):
                return media_type
    return ZIP


def _as_text(head: bytes) -> str | None:
    """Decoded text, or None when the bytes are not text (NULs, invalid UTF-8, control characters)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return head.decode("utf-16", errors="strict")[:HEAD_BYTES]
        except UnicodeDecodeError:
            return None
    if b"\x00" in head:
        return None
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    try:
        text = decoder.decode(head, final=False)  # a character cut at the end of head is fine
    except UnicodeDecodeError:
        try:  # legacy single-byte text (cp1252) is still text if it has no control characters
            text = head.decode("cp1252")
        except UnicodeDecodeError:
            return None
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > max(1, len(text) // 200):
        return None
    return text


def _sniff_text(text: str, filename: str | None) -> str:
    stripped = text.lstrip()
    if stripped.startswith("<") and _HTML_TAG.search(stripped[:8192].encode("utf-8", "replace")):
        return HTML
    if stripped.startswith("<?xml"):
        return XML
    ext = Path(filename).suffix.lower() if filename else ""
    strong = len(_MD_STRONG.findall(text))
    if strong >= 2 or (strong and ext in (".md", ".markdown")):
        return MARKDOWN
    if _looks_like_csv(text):
        return CSV
    if strong:
        return MARKDOWN
    if ext in (".csv", ".tsv"):
        return CSV
    if ext in (".md", ".markdown") or _MD_WEAK.search(text):
        return MARKDOWN
    return TEXT


def _looks_like_csv(text: str) -> bool:
    """At least two lines split by one delimiter into the same number (>= 2) of short fields."""
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if len(text) >= HEAD_BYTES - 4 and len(lines) > 2:
        lines = lines[:-1]  # the last line may be cut
    if len(lines) < 2 or any(ln.lstrip().startswith("|") for ln in lines[:3]):
        return False
    for delimiter in (",", "\t", ";", "|"):
        try:
            rows = list(csv.reader(lines, delimiter=delimiter))
        except csv.Error:
            continue
        widths = [len(r) for r in rows]
        mode = max(set(widths), key=widths.count)
        if mode < 2 or widths.count(mode) < 0.6 * len(widths):
            continue
        cells = [c for r in rows for c in r]
        if sum(len(c) for c in cells) / len(cells) <= 80:
            return True
    return False
