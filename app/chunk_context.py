"""A chunk's context: what is embedded (and full-text indexed) with it so that a chunk from the middle of
"Saskatoon Regional Economic Brief, Q1 2025" that says "the port throughput measure rose 8.8 percent"
is still found by a question about Saskatoon.

The context is rendered from a template (a chunk-set parameter, so changing it is a reprocess of the
chunk stage) with these fields:

* ``{title}``     the document's title: its first Markdown heading; else (a PDF whose title Docling
  did not mark as a heading, say) its first line when that line reads like a title — short, not a
  sentence, not a table — with the file name after it when the name adds a word; else the file name
  without its extension (else the DoclingDocument's name);
* ``{headings}``  the chunk's heading path below the title, joined by " > ";
* ``{table}``     for a chunk of table rows, the table's header row (its column names).

Lines that render empty are dropped. The chunk's ``text`` stays the chunk as written (offsets into
the Markdown unchanged); what the embedder sees is ``embed_input(context, text)``. The context is
capped at ``context_budget(max_tokens)`` tokens of the embedder, and the chunk size is reduced by the
same amount, so context + chunk fit the embedder's window (all-MiniLM-L6-v2: 256 tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import PurePath

import orjson

from app.catalogue.content import embed_input
from app.errors import InvalidRequest

__all__ = ["embed_input"]  # re-exported: the one definition is the catalogue's

DEFAULT_TEMPLATE = "{title}\n{headings}\n{table}"
FIELDS = ("title", "headings", "table")
MAX_CONTEXT_TOKENS = 64
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_FIELD = re.compile(r"\{([a-z_]*)\}")

CountTokens = Callable[[Sequence[str]], list[int]]


class ContextTemplateError(InvalidRequest, ValueError):
    """The context template names a field there is no value for."""


def check_template(template: str) -> str:
    """The template itself, when every ``{field}`` in it is one of FIELDS."""
    unknown = sorted({f for f in _FIELD.findall(template) if f not in FIELDS})
    if unknown:
        raise ContextTemplateError(
            f"the context template names unknown field(s) {', '.join(unknown)}; use {', '.join(FIELDS)}"
        )
    return template


def context_budget(max_tokens: int) -> int:
    """Tokens of the embedder's window the context may take (a quarter, at most 64)."""
    return min(MAX_CONTEXT_TOKENS, max_tokens // 4)


def document_title(docling_json: bytes, markdown: str, filename: str | None) -> str:
    """First heading of the Markdown; else its first line if it reads like a title (with the file
    name's stem after it, when the stem adds a word); else the stem, else the DoclingDocument's name.
    The stored file name comes before Docling's name: Docling names a document after the file it read,
    and Chronos converts from a temporary file, so a PDF without headings was titled "document"."""
    for line in markdown.splitlines()[:200]:
        match = _HEADING.match(line.strip())
        if match and any(ch.isalnum() for ch in match.group(1)):
            return match.group(1).strip()
    stem = _readable(PurePath(filename).stem) if filename else ""
    if not stem and docling_json and docling_json.strip():
        try:
            raw = orjson.loads(docling_json)
            stem = _readable(str(raw.get("name") or "")) if isinstance(raw, dict) else ""
        except orjson.JSONDecodeError:
            stem = ""
    first = title_line(markdown)
    if not first:
        return stem
    if any(len(w) > 2 and w.isalpha() for w in _words(stem) - _words(first)):
        return f"{first} ({stem})"
    return first


_MARKUP = re.compile(r"[*_`]+")
_NOT_TITLE_START = ("|", "!", "<", "-", "+", ">", "```", "[")


def title_line(markdown: str) -> str:
    """The first non-empty line of ``markdown`` when it reads like a title: 2-20 words, at most 150
    characters, mostly letters, not starting in lower case (a page that begins mid-sentence), not ending
    like a sentence or a clause, not a table row, image, list item or comment. "" when it does not."""
    for raw in markdown.splitlines()[:20]:
        line = raw.strip()
        if not line:
            continue
        if line.startswith(_NOT_TITLE_START):
            return ""
        text = _MARKUP.sub("", line).strip()
        words = text.split()
        if not 2 <= len(words) <= 20 or len(text) > 150 or not any(ch.isalpha() for ch in text):
            return ""
        if text[-1] in ".,;:!?" or text[0].islower() or sum(ch.isalpha() for ch in text) < len(text) / 2:
            return ""
        return text
    return ""


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^\w]+", text.casefold()) if w}


def _readable(name: str) -> str:
    return re.sub(r"[_\s]+", " ", name).strip()


def table_header(line: str) -> str:
    """The column names of a Markdown table's header row: ``| a | b |`` -> ``a | b``."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return " | ".join(c for c in cells if c)


def render(template: str, title: str, heading_path: Sequence[str], table: str = "") -> str:
    """The context of one chunk (lines that render empty dropped)."""
    path = list(heading_path)
    if path and title and path[0].strip().casefold() == title.strip().casefold():
        path = path[1:]
    values = {"title": title, "headings": " > ".join(h for h in path if h), "table": table}
    lines = [_FIELD.sub(lambda m: values.get(m.group(1), ""), line).strip() for line in template.split("\n")]
    return "\n".join(line for line in lines if line)


def cap(context: str, counter: CountTokens, budget: int) -> str:
    """``context`` cut (at a word where possible) to at most ``budget`` tokens, special tokens included."""
    if not context or counter([context])[0] <= budget:
        return context
    lo, hi = 0, len(context)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter([context[:mid]])[0] <= budget:
            lo = mid
        else:
            hi = mid - 1
    cut = context[:lo]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > lo // 2:
        cut = cut[:space]
    return cut.rstrip()
