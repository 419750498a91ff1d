"""Contextual chunks and tables as rows (issue 14), with the real all-MiniLM-L6-v2 tokenizer: context +
chunk fit the 256-token window, the chunk text is still the Markdown as written, tables are cut between
rows only and every table chunk carries the header row, and the context template is a chunk parameter."""

from __future__ import annotations

import pytest

from app.chunk_context import ContextTemplateError, document_title, embed_input, render, title_line
from app.chunking import chunk_document, chunk_with_context
from app.embedders import get_embedder, text_sha256
from tests.test_chunking import converted

pytestmark = pytest.mark.local_models
MODEL = "local:all-MiniLM-L6-v2"

ROWS = 80
TABLE = "| Indicator | January | February | March |\n|---|---|---|---|\n" + "\n".join(
    f"| Housing starts in district {i} of the northern region | {100 + i} | {200 + i} | {300 + i} |"
    for i in range(ROWS)
)
MARKDOWN = (
    "# Saskatoon Regional Economic Brief, Q1 2025\n\n## Overview\n\nConditions were in line with the province.\n\n"
    "## Trade and transport\n\n"
    "The port throughput measure rose 8.8 percent compared with the previous quarter.\n\n"
    f"## Housing\n\n{TABLE}\n\nAfter the table, a closing remark on the housing market.\n"
)


def _rows(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def test_tables_are_cut_between_rows_and_every_chunk_carries_the_header() -> None:
    emb = get_embedder(MODEL)
    kw = {"embedder_max_tokens": emb.max_tokens, "count_tokens": emb, "tokenizer_name": emb.tokenizer_name()}
    with_context, contents, _ = chunk_with_context(b"", MARKDOWN, filename="brief.md", **kw)  # type: ignore[arg-type]
    bare, _ = chunk_document(b"", MARKDOWN, **kw)  # type: ignore[arg-type]
    cases: list[tuple[list, list[str] | None]] = [(with_context, [x.context for x in contents]), (bare, None)]
    for chunks, contexts in cases:
        table_chunks = [c for c in chunks if "Housing starts in district" in (c.text or "")]
        assert len(table_chunks) >= 3  # the table does not fit one chunk
        seen: list[str] = []
        for c in table_chunks:
            lines = _rows(c.text or "")
            assert all(line.startswith("|") and line.endswith("|") for line in lines), c.text  # whole rows only
            seen += [line for line in lines if "district" in line]
        assert seen == [line for line in TABLE.split("\n") if "district" in line]  # every row once, in order
        if contexts is not None:
            for c, x in zip(chunks, contexts, strict=True):
                if c in table_chunks:
                    assert x.endswith("Indicator | January | February | March"), x


def test_context_fits_the_window_and_the_text_stays_as_written() -> None:
    emb = get_embedder(MODEL)
    chunks, contents, params = chunk_with_context(
        b"", MARKDOWN, embedder_max_tokens=emb.max_tokens, count_tokens=emb, tokenizer_name=emb.tokenizer_name(),
        filename="brief.md",
    )  # fmt: skip
    assert params.context_template and params.context_tokens == 64 and params.chunk_size == 256 - 64
    port = next(i for i, c in enumerate(chunks) if "8.8 percent" in (c.text or ""))
    assert "Saskatoon" not in (chunks[port].text or "")
    assert contents[port].context == "Saskatoon Regional Economic Brief, Q1 2025\nTrade and transport"
    assert contents[port].title == "Saskatoon Regional Economic Brief, Q1 2025"
    inputs = [embed_input(x.context, x.text) for x in contents]
    assert max(emb.count_tokens(inputs)) <= emb.max_tokens
    for c, x, inp in zip(chunks, contents, inputs, strict=True):
        assert MARKDOWN[c.char_start : c.char_end] == c.text == x.text
        assert c.embed_sha256 == text_sha256(inp) and c.text_sha256 == text_sha256(x.text)
    # A long title is capped so the context stays within its share of the window.
    long_title = "# " + " ".join(["Extraordinarily verbose regional economic brief title"] * 30) + "\n\n" + MARKDOWN
    _, contents, _ = chunk_with_context(b"", long_title, embedder_max_tokens=emb.max_tokens, count_tokens=emb,
                                        tokenizer_name=emb.tokenizer_name())  # fmt: skip
    assert max(emb.count_tokens([x.context for x in contents])) <= 64


def test_template_is_a_chunk_parameter_and_unknown_fields_are_refused() -> None:
    emb = get_embedder(MODEL)
    kw = {"embedder_max_tokens": emb.max_tokens, "count_tokens": emb, "tokenizer_name": emb.tokenizer_name()}
    _, _, pa = chunk_with_context(b"", MARKDOWN, **kw)  # type: ignore[arg-type]
    _, b, pb = chunk_with_context(b"", MARKDOWN, context_template="{title}", **kw)  # type: ignore[arg-type]
    assert pa != pb and pb.context_template == "{title}"
    assert all(x.context == "Saskatoon Regional Economic Brief, Q1 2025" for x in b)
    with pytest.raises(ContextTemplateError, match=r"unknown field.*author"):
        chunk_with_context(b"", MARKDOWN, context_template="{author}", **kw)  # type: ignore[arg-type]


def test_title_falls_back_to_a_title_line_then_the_file_name_then_docling_name() -> None:
    # Docling names a converted document after the temporary file it read ("document"): the stored
    # file name comes first (every PDF without headings was titled "document")
    assert document_title(b'{"name": "document"}', "no headings here", "annual_report.pdf") == "annual report"
    assert document_title(b'{"name": "annual_report"}', "plain text", None) == "annual report"
    assert document_title(b"", "plain text", "saskatoon_brief_q1.pdf") == "saskatoon brief q1"
    # a first line that reads like a title, with the file name after it when the name adds a word
    body = "Saskatoon Regional Economic Brief\n\nThe port throughput measure rose 8.8 percent."
    assert document_title(b'{"name": "document"}', body, "brief-4821.pdf") == "Saskatoon Regional Economic Brief"
    assert document_title(b"", body, "q1_outlook.pdf") == "Saskatoon Regional Economic Brief (q1 outlook)"
    # not a title: a sentence, a page that begins mid-sentence, a table, a number, one word
    for first in ("The port throughput measure rose 8.8 percent.", "pulleys, provided the inner race is clamped",
                  "| a | b |", "208", "Introduction", "<!-- image -->"):  # fmt: skip
        assert title_line(f"{first}\n\nmore") == "", first
        assert document_title(b"", f"{first}\n\nmore", "annual_report.pdf") == "annual report", first
    assert title_line("\n\n**The Evolution of the Word Processor**\n\ntext") == "The Evolution of the Word Processor"
    assert render("{title}\n{headings}\n{table}", "Brief", ["Brief", "Housing"], "a | b") == "Brief\nHousing\na | b"


def test_real_xlsx_table_chunks_keep_whole_rows() -> None:
    js, md, _ = converted("xlsx/xlsx_01.xlsx")
    emb = get_embedder(MODEL)
    chunks, _, _ = chunk_with_context(js, md, embedder_max_tokens=emb.max_tokens, count_tokens=emb,
                                             tokenizer_name=emb.tokenizer_name(), filename="xlsx_01.xlsx")  # fmt: skip
    table_lines = [c for c in chunks if (c.text or "").lstrip().startswith("|")]
    assert table_lines
    for c in table_lines:
        assert all(line.strip().endswith("|") for line in _rows(c.text or "")), c.text
