"""Chunking: a converted document (Docling JSON + Markdown) into chunks that fit the embedder.

Two LlamaIndex node parsers, structure first:

1. ``MarkdownNodeParser`` cuts the Docling Markdown at its headings; each section keeps its heading
   path (parent headings and its own). A section that is only a heading joins the next section.
2. ``SentenceSplitter`` cuts each section into chunks of at most ``chunk_size`` tokens with
   ``chunk_overlap`` tokens of overlap, preferring paragraph and sentence boundaries, counting with
   the EMBEDDER's tokenizer (``count_tokens``), never LlamaIndex's default tiktoken.

``chunk_size`` is capped by the embedder's window (``embedder_max_tokens``), counted the way the
embedder counts (special tokens included), and every chunk is checked afterwards with that same
counter: a chunk still over the cap (sub-word tokenizers do not add up exactly) is cut again.

Provenance: ``char_start``/``char_end`` are offsets into the Markdown and the chunk text is exactly
``markdown[char_start:char_end]``. Pages come from the DoclingDocument: every item with a
provenance (``prov[].page_no``) is located in the Markdown, in reading order, and a chunk gets the
pages of the items its span overlaps. Formats without pages (DOCX, HTML, Markdown, CSV) give ``[]``.

Chunks with no letters or digits (an image placeholder alone, a table rule) are dropped. Same input,
same chunks: nothing here depends on time, randomness or ids.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import orjson

from app import chunk_context
from app.catalogue import events as ev
from app.embedders.base import text_sha256
from app.errors import InvalidRequest

log = logging.getLogger(__name__)

SPLITTER = "markdown+sentence"
DEFAULT_CHUNK_SIZE = 512
MIN_CHUNK_SIZE = 32
IMAGE_PLACEHOLDER = "<!-- image -->"
_PROBE = 48  # normalized characters of an item used to find it in the Markdown
_WINDOW = 20_000  # how far past the last found item an item is looked for
_HEADING = re.compile(r"^(#+)\s(.*)")
_HEADING_SEP = "\x1f"  # heading texts may contain "/", MarkdownNodeParser's default separator

_TABLE_LINE = re.compile(r"^[ \t]*\|.*\|[ \t]*$")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$")

CountTokens = Callable[[Sequence[str]], list[int]]
Span = tuple[int, int, list[str], str]  # start, end, heading path, the table's header row ("" for prose)


class HasCountTokens(Protocol):
    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


class ChunkingError(InvalidRequest, ValueError):
    """The converted document or the chunk parameters cannot be chunked."""


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    heading_path: list[str]


class _Sized:
    """What SentenceSplitter's tokenizer must return: something with a length (the token count)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def chunk_document(
    docling_json: bytes,
    markdown: str,
    *,
    embedder_max_tokens: int,
    count_tokens: CountTokens | HasCountTokens,
    tokenizer_name: str,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> tuple[list[ev.Chunk], ev.ChunkParameters]:
    """Chunks of ``markdown`` (in order, ordinals from 0) and the parameters actually used (no context:
    each chunk is embedded as written; the chunk stage uses ``chunk_with_context``)."""
    counter = _counter(count_tokens)
    params = chunk_parameters(embedder_max_tokens, tokenizer_name, chunk_size, chunk_overlap)
    chunks, _ = _chunks(docling_json, markdown, counter, params)
    return chunks, params


def chunk_with_context(
    docling_json: bytes,
    markdown: str,
    *,
    embedder_max_tokens: int,
    count_tokens: CountTokens | HasCountTokens,
    tokenizer_name: str,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    filename: str | None = None,
    context_template: str = chunk_context.DEFAULT_TEMPLATE,
) -> tuple[list[ev.Chunk], list[ev.ChunkContent], ev.ChunkParameters]:
    """Chunks, their content (text, heading path, title, context) and the parameters used.

    The context (app/chunk_context.py) takes at most ``context_budget`` tokens of the embedder's
    window and the chunk size is capped by what is left, so context + chunk always fit; each chunk's
    ``embed_sha256`` is the hash of what the embed stage will embed (the embedding cache's key)."""
    counter = _counter(count_tokens)
    template = chunk_context.check_template(context_template)
    budget = chunk_context.context_budget(embedder_max_tokens)
    params = chunk_parameters(embedder_max_tokens - budget, tokenizer_name, chunk_size, chunk_overlap)
    params = msgspec.structs.replace(
        params, embedder_max_tokens=embedder_max_tokens, context_template=template, context_tokens=budget
    )
    chunks, tables = _chunks(docling_json, markdown, counter, params)
    title = chunk_context.document_title(docling_json, markdown, filename)
    contexts = [
        chunk_context.cap(chunk_context.render(template, title, c.heading_path or [], table), counter, budget)
        for c, table in zip(chunks, tables, strict=True)
    ]
    inputs = [chunk_context.embed_input(x, c.text or "") for x, c in zip(contexts, chunks, strict=True)]
    for i, count in enumerate(counter(inputs)):  # sub-word counts do not add up exactly: re-check each
        while count > embedder_max_tokens and contexts[i]:
            contexts[i] = chunk_context.cap(contexts[i], counter, max(0, counter([contexts[i]])[0] - (count -
                                            embedder_max_tokens) - 1))  # fmt: skip
            inputs[i] = chunk_context.embed_input(contexts[i], chunks[i].text or "")
            count = counter([inputs[i]])[0]
    out = [msgspec.structs.replace(c, embed_sha256=text_sha256(x)) for c, x in zip(chunks, inputs, strict=True)]
    contents = [
        ev.ChunkContent(text=c.text or "", heading_path=list(c.heading_path or ()), title=title, context=x)
        for c, x in zip(chunks, contexts, strict=True)
    ]
    return out, contents, params


def _counter(count_tokens: CountTokens | HasCountTokens) -> CountTokens:
    return count_tokens.count_tokens if hasattr(count_tokens, "count_tokens") else count_tokens


def _chunks(
    docling_json: bytes, markdown: str, counter: CountTokens, params: ev.ChunkParameters
) -> tuple[list[ev.Chunk], list[str]]:
    """The chunks and, for each, its table's header row ("" for a chunk of prose)."""
    overhead = counter([""])[0]  # special tokens the model adds to every input ([CLS] [SEP])
    cap = params.chunk_size
    if not markdown.strip():
        return [], []
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=cap - overhead,
        chunk_overlap=min(params.chunk_overlap, (cap - overhead) // 2),
        tokenizer=lambda text: _Sized(max(0, counter([text])[0] - overhead)),
    )
    spans: list[Span] = []
    for section in markdown_sections(markdown):
        for start, end, is_table in table_blocks(markdown, section.start, section.end):
            if is_table:
                spans += [(s, e, section.heading_path, header)
                          for s, e, header in table_row_spans(markdown, start, end, counter, cap)]  # fmt: skip
                continue
            body = markdown[start:end]
            if not body.strip():
                continue
            cursor = 0
            for piece in splitter.split_text(body):
                located = locate(body, piece, cursor)
                if located is None:
                    log.warning(
                        "A chunk could not be located in its section; using the section",
                        extra={"section_start": section.start, "chunk_chars": len(piece)},
                    )
                    located = (0, len(body))
                begin, finish = located
                cursor = begin + 1
                spans.append((start + begin, start + finish, section.heading_path, ""))
    spans = _enforce_cap(markdown, spans, counter, cap)
    pages_of = PageMap.build(docling_json, markdown)
    texts = [markdown[s:e] for s, e, _, _ in spans]
    counts = counter(texts)
    chunks: list[ev.Chunk] = []
    tables: list[str] = []
    for (start, end, heading_path, header), text, count in zip(spans, texts, counts, strict=True):
        if not _has_words(text):
            continue
        chunks.append(ev.Chunk(
            ordinal=len(chunks), text=text, text_sha256=text_sha256(text), pages=pages_of.pages(start, end),
            heading_path=list(heading_path), char_start=start, char_end=end, token_count=count,
        ))  # fmt: skip
        tables.append(chunk_context.table_header(header) if header else "")
    return chunks, tables


def chunk_parameters(
    embedder_max_tokens: int, tokenizer_name: str, chunk_size: int | None, chunk_overlap: int | None
) -> ev.ChunkParameters:
    """Requested size capped by the embedder's window; overlap defaults to an eighth of the size."""
    if embedder_max_tokens < MIN_CHUNK_SIZE:
        raise ChunkingError(f"an embedder window of {embedder_max_tokens} tokens is too small to chunk for")
    requested = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if requested < MIN_CHUNK_SIZE:
        raise ChunkingError(f"chunk size {requested} is too small; use at least {MIN_CHUNK_SIZE} tokens")
    size = min(requested, embedder_max_tokens)
    overlap = size // 8 if chunk_overlap is None else int(chunk_overlap)
    if overlap < 0:
        raise ChunkingError(f"chunk overlap {overlap} is negative")
    if overlap >= size // 2:
        raise ChunkingError(f"chunk overlap {overlap} must be less than half the chunk size ({size})")
    return ev.ChunkParameters(
        splitter=SPLITTER, chunk_size=size, chunk_overlap=overlap, requested_chunk_size=requested,
        tokenizer=tokenizer_name, embedder_max_tokens=embedder_max_tokens,
    )  # fmt: skip


# --- structure: Markdown sections ------------------------------------------------------------


def markdown_sections(markdown: str) -> list[_Section]:
    """Sections of the Markdown by heading (MarkdownNodeParser), located in the Markdown. Sections
    are contiguous: each runs to the start of the next, so no text falls between them."""
    from llama_index.core import Document
    from llama_index.core.node_parser import MarkdownNodeParser

    parser = MarkdownNodeParser(include_prev_next_rel=False, header_path_separator=_HEADING_SEP)
    nodes = parser.get_nodes_from_documents([Document(text=markdown, id_="doc")])
    heads: list[tuple[int, list[str]]] = []
    cursor = 0
    pending: int | None = None  # start of heading-only sections waiting to join the next one
    for node in nodes:
        text = node.get_content()
        located = locate(markdown, text, cursor)
        if located is None:  # its text stays in the previous section
            log.warning("A Markdown section could not be located", extra={"section_chars": len(text)})
            continue
        start, cursor = located
        parents = [h for h in str(node.metadata.get("header_path", "")).split(_HEADING_SEP) if h]
        first, _, rest = text.partition("\n")
        match = _HEADING.match(first)
        if match and not rest.strip():
            pending = start if pending is None else pending
            continue
        heads.append((start if pending is None else pending, [*parents, *([match.group(2).strip()] if match else [])]))
        pending = None
    if pending is not None:  # the document ends with headings only
        heads.append((pending, []))
    if not heads:
        return [_Section(0, len(markdown), [])]
    sections: list[_Section] = []
    for i, (start, path) in enumerate(heads):
        begin = 0 if i == 0 else start
        end = heads[i + 1][0] if i + 1 < len(heads) else len(markdown)
        sections.append(_Section(begin, end, path))
    return sections


# --- tables: chunks of whole rows --------------------------------------------------------------


def table_blocks(markdown: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """[start, end) cut into contiguous blocks: Markdown tables (a row, a rule, rows) and the rest."""
    blocks: list[tuple[int, int, bool]] = []
    lines: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        nl = markdown.find("\n", pos, end)
        stop = end if nl < 0 else nl
        lines.append((pos, stop))
        pos = stop + 1
    cursor = start
    i = 0
    while i < len(lines):
        s, e = lines[i]
        is_head = _TABLE_LINE.match(markdown[s:e]) and i + 1 < len(lines)
        if is_head and _TABLE_RULE.match(markdown[lines[i + 1][0] : lines[i + 1][1]]):
            j = i + 2
            while j < len(lines) and _TABLE_LINE.match(markdown[lines[j][0] : lines[j][1]]):
                j += 1
            if s > cursor:
                blocks.append((cursor, s, False))
            blocks.append((s, lines[j - 1][1], True))
            cursor = lines[j - 1][1]
            i = j
            continue
        i += 1
    if cursor < end:
        blocks.append((cursor, end, False))
    return blocks


def table_row_spans(markdown: str, start: int, end: int, counter: CountTokens, cap: int) -> list[tuple[int, int, str]]:
    """A table's rows in chunks of whole rows that fit ``cap`` tokens, each with the table's header row
    (the first chunk holds the header and rule as written; the others carry the header as context).
    Only a single row longer than the window is ever cut (by the token cap afterwards)."""
    rows: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        nl = markdown.find("\n", pos, end)
        stop = end if nl < 0 else nl
        rows.append((pos, stop))
        pos = stop + 1
    header = markdown[rows[0][0] : rows[0][1]]
    body = rows[2:]
    overhead = counter([""])[0]
    counts = [max(0, n - overhead) for n in counter([markdown[s:e] for s, e in body])] if body else []
    head_tokens = counter([markdown[start : rows[1][1]]])[0] - overhead
    groups: list[list[int]] = []
    current: list[int] = []
    used = overhead + head_tokens
    for i, n in enumerate(counts):
        if current and used + n > cap:
            groups.append(current)
            current, used = [], overhead
        current.append(i)
        used += n
    if current:
        groups.append(current)
    if not groups:
        return [(start, end, header)]
    spans: list[tuple[int, int, str]] = []
    for g, members in enumerate(groups):
        while True:  # the sum of row counts is an estimate: a group over the cap gives its last row on
            s = start if g == 0 else body[members[0]][0]
            e = body[members[-1]][1]
            if len(members) == 1 or counter([markdown[s:e]])[0] <= cap:
                break
            moved = members.pop()
            if g + 1 < len(groups):
                groups[g + 1].insert(0, moved)
            else:
                groups.append([moved])
        spans.append((s, e, header))
    return spans


# --- finding text in the Markdown -------------------------------------------------------------


def _normalize(text: str) -> tuple[str, list[int]]:
    """Letters and digits only, case-folded, with the index in ``text`` each one came from.
    HTML entities (Docling escapes &, <, >) are skipped as a whole."""
    chars: list[str] = []
    index: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "&":
            m = re.match(r"&(?:[a-zA-Z]{2,8}|#\d{1,6}|#x[0-9a-fA-F]{1,6});", text[i : i + 10])
            if m:
                i += len(m.group(0))
                continue
        if ch.isalnum():
            for folded in ch.casefold():
                chars.append(folded)
                index.append(i)
        i += 1
    return "".join(chars), index


def locate(haystack: str, needle: str, start: int = 0) -> tuple[int, int] | None:
    """[start, end) of ``needle`` in ``haystack`` at or after ``start``: exactly when it is there,
    else by its letters and digits (escaping and whitespace may differ)."""
    if not needle:
        return None
    found = haystack.find(needle, start)
    if found >= 0:
        return found, found + len(needle)
    norm_needle, _ = _normalize(needle)
    if not norm_needle:
        return None
    norm_hay, index = _normalize(haystack)
    norm_start = bisect.bisect_left(index, start)
    pos = norm_hay.find(norm_needle, norm_start)
    if pos < 0:
        return None
    begin = index[pos]
    end = index[pos + len(norm_needle) - 1] + 1
    stripped = needle.strip()  # markup before the first and after the last letter or digit
    begin = max(start, begin - _non_alnum_prefix(stripped))
    end = min(len(haystack), end + _non_alnum_prefix(stripped[::-1]))
    return begin, end


def _non_alnum_prefix(text: str) -> int:
    n = 0
    while n < len(text) and not text[n].isalnum():
        n += 1
    return n


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text.replace(IMAGE_PLACEHOLDER, ""))


# --- the token cap ----------------------------------------------------------------------------


def _enforce_cap(markdown: str, spans: list[Span], counter: CountTokens, cap: int) -> list[Span]:
    """Cut again every span whose text the embedder's tokenizer counts over ``cap``."""
    counts = counter([markdown[s:e] for s, e, _, _ in spans])
    out: list[Span] = []
    for (start, end, path, header), count in zip(spans, counts, strict=True):
        if count <= cap:
            out.append((start, end, path, header))
            continue
        out.extend((s, e, path, header) for s, e in _hard_split(markdown, start, end, counter, cap))
    return out


def _hard_split(markdown: str, start: int, end: int, counter: CountTokens, cap: int) -> list[tuple[int, int]]:
    """Greedy longest prefixes that fit ``cap`` (found by bisection), cut at whitespace when one is
    in the second half of the prefix."""
    pieces: list[tuple[int, int]] = []
    while start < end:
        while start < end and markdown[start].isspace():
            start += 1
        if start >= end:
            break
        if counter([markdown[start:end]])[0] <= cap:
            pieces.append((start, _rstrip(markdown, start, end)))
            break
        lo, hi = start + 1, end  # the longest prefix [start, cut) that fits lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if counter([markdown[start:mid]])[0] <= cap:
                lo = mid
            else:
                hi = mid - 1
        cut = lo
        space = max(markdown.rfind(" ", start, cut), markdown.rfind("\n", start, cut))
        if space > start + (cut - start) // 2:
            cut = space
        pieces.append((start, _rstrip(markdown, start, cut)))
        start = cut
    return pieces


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


# --- pages from the DoclingDocument -----------------------------------------------------------


class PageMap:
    """Regions of the Markdown, each starting where an item with page provenance was found."""

    def __init__(self, starts: list[int], pages: list[tuple[int, ...]]) -> None:
        self.starts = starts
        self.page_sets = pages

    def pages(self, start: int, end: int) -> list[int]:
        """Pages of every region the span [start, end) overlaps."""
        if not self.starts:
            return []
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        found: set[int] = set()
        while i < len(self.starts) and self.starts[i] < end:
            found.update(self.page_sets[i])
            i += 1
        return sorted(found)

    @classmethod
    def build(cls, docling_json: bytes, markdown: str) -> PageMap:
        items = list(_items_with_pages(docling_json))
        if not items:
            return cls([], [])
        norm_md, index = _normalize(markdown)
        starts: list[int] = []
        pages: list[tuple[int, ...]] = []
        cursor = 0
        for text, item_pages in items:
            norm, _ = _normalize(text)
            if len(norm) < 3:
                continue
            probe = norm[:_PROBE]
            pos = norm_md.find(probe, cursor, cursor + _WINDOW + len(probe))
            if pos < 0:
                continue
            cursor = pos + len(probe)
            at = _line_start(markdown, index[pos])
            if starts and at <= starts[-1]:
                at = index[pos]
                if starts and at <= starts[-1]:
                    pages[-1] = tuple(sorted(set(pages[-1]) | set(item_pages)))
                    continue
            starts.append(at)
            pages.append(item_pages)
        return cls(starts, pages)


def _line_start(markdown: str, at: int) -> int:
    """The start of the line ``at`` is on, when only markup precedes it there ("## ", "- ", "| ")."""
    line = markdown.rfind("\n", 0, at) + 1
    return line if not any(ch.isalnum() for ch in markdown[line:at]) else at


def _items_with_pages(docling_json: bytes) -> list[tuple[str, tuple[int, ...]]]:
    """(text, pages) of the document's body items in reading order, for items that have pages.

    Walks the DoclingDocument JSON as plain data, in the order ``DoclingDocument.iterate_items()``
    yields (tested against it): from ``body`` through ``children`` references, groups not
    yielded, only the body content layer, inside a picture only its captions. Building the
    pydantic model instead costs more than the rest of chunking on a large document."""
    if not docling_json or not docling_json.strip():
        return []
    try:
        raw = orjson.loads(docling_json)
    except orjson.JSONDecodeError as exc:
        raise ChunkingError(f"the DoclingDocument JSON does not parse: {exc}") from exc
    try:
        return list(_walk_items(raw))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ChunkingError(f"the JSON is not a DoclingDocument: {type(exc).__name__}: {str(exc)[:300]}") from exc


def _resolve(raw: dict[str, Any], ref: str) -> dict[str, Any]:
    """The node a JSON pointer like ``#/texts/3`` or ``#/body`` names."""
    parts = ref.removeprefix("#/").split("/")
    node: Any = raw
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if not isinstance(node, dict):
        raise TypeError(f"{ref} is not an item")
    return node


def _table_text(item: dict[str, Any]) -> str:
    """What ``TableItem.data.grid`` joins to: cell texts row by row, a spanning cell in each place."""
    data = item.get("data") or {}
    rows, cols = int(data.get("num_rows") or 0), int(data.get("num_cols") or 0)
    grid = [[""] * cols for _ in range(rows)]
    for cell in data.get("table_cells") or []:
        for i in range(min(cell["start_row_offset_idx"], rows), min(cell["end_row_offset_idx"], rows)):
            for j in range(min(cell["start_col_offset_idx"], cols), min(cell["end_col_offset_idx"], cols)):
                grid[i][j] = cell.get("text") or ""
    return " ".join(text for row in grid for text in row)


def _walk_items(raw: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    stack: list[dict[str, Any]] = [raw["body"]]
    seen: set[str] = set()  # a malformed document whose references loop is walked once
    while stack:
        node = stack.pop()
        ref = str(node.get("self_ref", ""))
        if ref in seen:
            continue
        seen.add(ref)
        kind = ref.split("/")[1] if ref.count("/") >= 1 else ""
        if kind not in ("body", "furniture", "groups") and node.get("content_layer", "body") == "body":
            pages = tuple(sorted({p["page_no"] for p in node.get("prov") or [] if p.get("page_no")}))
            if pages:
                text = _table_text(node) if kind == "tables" else str(node.get("text") or "")
                if text.strip():
                    yield text, pages
        children = [c["$ref"] for c in node.get("children") or []]
        if kind == "pictures":
            captions = {c["$ref"] for c in node.get("captions") or []}
            children = [c for c in children if c in captions]
        stack.extend(_resolve(raw, c) for c in reversed(children))
