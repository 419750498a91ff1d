"""Cheap checks of hostile input, run in the service before a file is queued for a converter process.

Docling is the expensive, fragile part: a converter process can be held for its whole time limit by
input that a few milliseconds of scanning show it cannot handle. Each check here reads the file once,
in bounded memory, and raises ``ConversionFailure`` (never retryable: a property of the input) with
a reason that says what to change:

* **HTML nesting** (``NestingTooDeep``). Docling parses HTML with BeautifulSoup's ``html.parser``
  builder and walks the tree recursively: measured here, 400 nested ``<div>`` convert in 2 s, 500 fail
  (recursion), 2,000 take 27 s and 50,000 (a 550 KB file) held a converter for its whole 300 s limit.
  Two depths are measured with the same tokenizer (the standard library's ``HTMLParser``):
  the element depth a browser would build (``<li>``, ``<p>``, ``<td>``… closed by their next sibling,
  as Docling's own clean-up does) is capped at ``MAX_DEPTH``; the depth ``html.parser`` builds before
  that clean-up (elements whose end tag is omitted stay open) at ``MAX_OPEN``: Docling moves each
  such element out one by one, quadratic in the count (10,000 unclosed ``<li>``: 41 s).
* **Office packages** (``ExpandsTooLarge``). DOCX/PPTX/XLSX are ZIP files: the central directory says
  how large the members expand, so a ZIP bomb is refused before anything unpacks it.
"""

from __future__ import annotations

import codecs
import collections
import zipfile
from html.parser import HTMLParser
from pathlib import Path

from app.convert import errors
from app.convert.errors import ConversionFailure
from app.convert.sniff import DOCX, HTML, PPTX, XLSX

MAX_DEPTH = 256
"""Deepest element nesting (as a browser builds the tree) Docling is given."""
MAX_OPEN = 4096
"""Most elements ``html.parser`` keeps open at once (end tags omitted) that Docling is given."""
MAX_EXPANDED_BYTES = 2 * 1024**3
"""Largest total uncompressed size of an Office package's members."""
MAX_MEMBERS = 20_000
READ_BYTES = 1024 * 1024

# Elements that never have content (BeautifulSoup's empty-element tags): they open no level.
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "menuitem", "meta", "param",
    "source", "track", "wbr", "basefont", "bgsound", "command", "frame", "image", "isindex", "nextid", "spacer",
})  # fmt: skip
# Start tag -> (open elements it closes, elements that stop the search): the implied end tags of
# HTML (Docling's ``_IMPLIED_END_TAGS`` plus <p> and <option>).
_IMPLIED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), frozenset({"ul", "ol", "menu"})),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "td": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "th": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "tr": (frozenset({"tr", "td", "th"}), frozenset({"table", "thead", "tbody", "tfoot"})),
    "option": (frozenset({"option"}), frozenset({"select", "datalist"})),
}
# Block elements whose start closes an open <p> (HTML's "close a p element"), within its scope.
_CLOSES_P = frozenset({
    "address", "article", "aside", "blockquote", "details", "div", "dl", "fieldset", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "menu", "nav", "ol", "p",
    "pre", "section", "table", "ul",
})  # fmt: skip
_P_SCOPE = frozenset({"button", "td", "th", "caption", "table", "html", "template", "object", "marquee"})


class _TooDeep(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _DepthMeter(HTMLParser):
    """Tracks both depths while the file is fed through; raises ``_TooDeep`` at the first excess."""

    def __init__(self, max_depth: int, max_open: int) -> None:
        super().__init__(convert_charrefs=False)
        self.max_depth = max_depth
        self.max_open = max_open
        self.raw: list[str] = []  # html.parser's open elements
        self.raw_names: collections.Counter[str] = collections.Counter()
        self.tree: list[str] = []  # the browser's open elements
        self.deepest = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        self.raw.append(tag)
        self.raw_names[tag] += 1
        if len(self.raw) > self.max_open:
            line = self.getpos()[0]
            raise _TooDeep(f"leaves more than {self.max_open} HTML elements open at once (line {line}: end tags "
                           "such as </li> or </p> omitted); Docling re-nests such elements one by one, which takes "
                           "minutes")  # fmt: skip
        if tag in _CLOSES_P:
            self._close(frozenset({"p"}), _P_SCOPE)
        implied = _IMPLIED.get(tag)
        if implied is not None:
            self._close(*implied)
        self.tree.append(tag)
        self.deepest = max(self.deepest, len(self.tree))
        if len(self.tree) > self.max_depth:
            line = self.getpos()[0]
            raise _TooDeep(f"nests HTML elements more than {self.max_depth} deep (line {line}); Docling walks "
                           "HTML recursively and fails or runs for minutes on markup this deep")  # fmt: skip

    def _close(self, closes: frozenset[str], stops: frozenset[str]) -> None:
        """Close open elements as Docling's clean-up does: while the nearest open element among
        ``closes | stops`` is one of ``closes``, close it (and what it contains)."""
        i = len(self.tree) - 1
        while i >= 0:
            name = self.tree[i]
            if name in stops:
                return
            if name in closes:
                del self.tree[i:]
            i -= 1

    def handle_endtag(self, tag: str) -> None:
        if self.raw_names[tag]:  # as BeautifulSoup does: pop to the innermost open element of that name
            while self.raw:
                name = self.raw.pop()
                self.raw_names[name] -= 1
                if name == tag:
                    break
        for i in range(len(self.tree) - 1, -1, -1):
            if self.tree[i] == tag:
                del self.tree[i:]
                break


def html_depth(path: Path, max_depth: int = MAX_DEPTH, max_open: int = MAX_OPEN) -> int:
    """The deepest element nesting of an HTML file; raises ``_TooDeep`` past either limit."""
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        encoding = "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        meter = _DepthMeter(max_depth, max_open)
        while piece := fh.read(READ_BYTES):
            meter.feed(decoder.decode(piece))
        meter.feed(decoder.decode(b"", final=True))
    meter.close()
    return meter.deepest


def check_html(path: Path, filename: str, max_depth: int = MAX_DEPTH, max_open: int = MAX_OPEN) -> None:
    try:
        html_depth(path, max_depth, max_open)
    except _TooDeep as exc:
        raise ConversionFailure(
            errors.NESTING_TOO_DEEP,
            f"{filename!r} {exc.message}, so it was not converted: flatten the markup (or save the page as PDF) "
            "and upload it again",
            retryable=False,
        ) from None


def check_package(
    path: Path, filename: str, max_bytes: int = MAX_EXPANDED_BYTES, max_members: int = MAX_MEMBERS
) -> None:
    """Refuse an Office package whose members would expand past ``max_bytes`` (a ZIP bomb)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not readable as a ZIP: Docling reports it as the corrupt file it is
    expanded = sum(m.file_size for m in members)
    if len(members) > max_members or expanded > max_bytes:
        raise ConversionFailure(
            errors.EXPANDS_TOO_LARGE,
            f"{filename!r} is a {path.stat().st_size} byte package whose {len(members)} members expand to "
            f"{expanded} bytes (limits: {max_members} members, {max_bytes} bytes), so it was not unpacked: "
            "upload the document without embedded bulk (or split it)",
            retryable=False,
        )


def check(path: Path, filename: str, media_type: str) -> None:
    """Every check that applies to this media type; raises ``ConversionFailure`` for hostile input."""
    if media_type == HTML:
        check_html(path, filename)
    elif media_type in (DOCX, PPTX, XLSX):
        check_package(path, filename)
