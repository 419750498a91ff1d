"""Chunking real corpus documents converted in-process with Docling (model-free PDF pipeline)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import msgspec
import pytest

from app.chunking import ChunkingError, chunk_document
from app.config import Settings
from app.embedders import get_embedder
from tests.conftest import CORPUS

pytestmark = pytest.mark.local_models


@cache
def converted(relpath: str) -> tuple[bytes, str, dict]:
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions
    from docling.document_converter import DocumentConverter, NativePdfFormatOption

    conv = DocumentConverter(
        format_options={
            InputFormat.PDF: NativePdfFormatOption(
                pipeline_options=NativePdfPipelineOptions(generate_page_images=False, generate_picture_images=False)
            )
        }
    )
    doc = conv.convert(str(Path(CORPUS) / relpath)).document
    data = doc.export_to_dict()
    return json.dumps(data).encode(), doc.export_to_markdown(), data


def _chunk(relpath: str, model: str, **kw: int) -> tuple[list, dict]:
    js, md, _ = converted(relpath)
    emb = get_embedder(model, Settings(openai_api_key="k"))
    chunks, params = chunk_document(
        js,
        md,
        embedder_max_tokens=emb.max_tokens,
        count_tokens=emb.count_tokens,
        tokenizer_name=emb.tokenizer_name(),
        **kw,
    )
    return [msgspec.to_builtins(c) for c in chunks], msgspec.to_builtins(params)


@pytest.mark.parametrize(
    "relpath",
    [
        "pdf/multi_page.pdf",
        "pdf/redp5110_sampled.pdf",
        "html/wiki_duck.html",
        "docx/word_sample.docx",
        "xlsx/xlsx_01.xlsx",
    ],
)
@pytest.mark.parametrize("model", ["local:all-MiniLM-L6-v2", "openai:text-embedding-3-small"])
def test_chunks_fit_the_window_and_offsets_point_into_the_markdown(relpath: str, model: str) -> None:
    _, md, _ = converted(relpath)
    emb = get_embedder(model, Settings(openai_api_key="k"))
    chunks, params = _chunk(relpath, model)
    assert chunks and params["chunk_size"] == min(512, emb.max_tokens)
    recount = emb.count_tokens([c["text"] for c in chunks])
    for c, n in zip(chunks, recount, strict=True):
        assert n == c["token_count"] <= emb.max_tokens  # counted by the embedder's own tokenizer
        assert md[c["char_start"] : c["char_end"]] == c["text"]
    assert [c["ordinal"] for c in chunks] == list(range(len(chunks)))
    starts = [c["char_start"] for c in chunks]
    assert starts == sorted(starts)
    covered = "".join(ch for c in chunks for ch in c["text"] if ch.isalnum())
    assert len(covered) >= sum(ch.isalnum() for ch in md.replace("<!-- image -->", ""))  # nothing lost


def test_pages_follow_docling_provenance_on_a_multi_page_pdf() -> None:
    _, _, data = converted("pdf/multi_page.pdf")
    chunks, _ = _chunk("pdf/multi_page.pdf", "local")
    assert {p for c in chunks for p in c["pages"]} == {1, 2, 3, 4, 5}
    checked = 0
    for item in data["texts"]:
        if len(item["text"]) < 40 or not item.get("prov"):
            continue
        page = item["prov"][0]["page_no"]
        holders = [c for c in chunks if item["text"] in c["text"]]
        assert holders, item["text"]
        assert all(page in c["pages"] for c in holders), (item["text"], page, [c["pages"] for c in holders])
        checked += 1
    assert checked > 20


def test_heading_path_chunk_size_cap_and_determinism() -> None:
    chunks, params = _chunk("docx/word_sample.docx", "local", chunk_size=1000, chunk_overlap=16)
    assert params["requested_chunk_size"] == 1000 and params["chunk_size"] == 256 and params["chunk_overlap"] == 16
    assert ["Swimming in the lake", "Let’s swim!"] in [c["heading_path"] for c in chunks]
    assert all(c["pages"] == [] for c in chunks)  # DOCX has no pages
    again, _ = _chunk("docx/word_sample.docx", "local", chunk_size=1000, chunk_overlap=16)
    assert again == chunks
    small, _ = _chunk("pdf/multi_page.pdf", "local", chunk_size=64, chunk_overlap=8)
    assert len(small) > 20 and max(c["token_count"] for c in small) <= 64


def test_empty_document_gives_no_chunks_and_bad_parameters_are_refused() -> None:
    emb = get_embedder("local")
    kw = {"embedder_max_tokens": emb.max_tokens, "count_tokens": emb.count_tokens, "tokenizer_name": "t"}
    assert chunk_document(b"", "  \n", **kw)[0] == []  # type: ignore[arg-type]
    with pytest.raises(ChunkingError):
        chunk_document(b"", "text", chunk_size=100, chunk_overlap=60, **kw)  # type: ignore[arg-type]
    with pytest.raises(ChunkingError):
        chunk_document(b"{not json", "text", **kw)  # type: ignore[arg-type]


def _reference_items(data: dict) -> list[tuple[str, tuple[int, ...]]]:
    """What docling_core's own model yields: ``DoclingDocument.iterate_items()`` on the validated document."""
    from docling_core.types.doc import DoclingDocument, TableItem

    out = []
    for item, _level in DoclingDocument.model_validate(data).iterate_items():
        pages = tuple(sorted({p.page_no for p in getattr(item, "prov", None) or [] if p.page_no}))
        text = (
            " ".join(c.text for row in item.data.grid for c in row)
            if isinstance(item, TableItem)
            else (getattr(item, "text", "") or "")
        )
        if pages and text.strip():
            out.append((text, pages))
    return out


@pytest.mark.parametrize(
    "relpath",
    [
        "pdf/multi_page.pdf",
        "pdf/redp5110_sampled.pdf",
        "pdf/2305.03393v1-pg9.pdf",
        "pdf/table_mislabeled_as_picture.pdf",
        "pdf/picture_classification.pdf",
        "docx/word_sample.docx",
        "html/wiki_duck.html",
    ],
)
def test_page_items_walk_the_json_as_docling_iterates_the_document(relpath: str) -> None:
    """The chunker reads page provenance from the JSON as plain data; it must see the same items, in
    the same order, with the same text and pages as docling_core's ``iterate_items`` (tables included)."""
    from app.chunking import _items_with_pages

    js, _, data = converted(relpath)
    assert _items_with_pages(js) == _reference_items(data)


def test_page_items_refuse_a_json_that_is_not_a_docling_document() -> None:
    from app.chunking import _items_with_pages

    for bad in (b"[]", b'{"body": {"children": [{"$ref": "#/texts/7"}]}, "texts": []}', b'{"texts": []}'):
        with pytest.raises(ChunkingError, match="not a DoclingDocument"):
            _items_with_pages(bad)
    looped = {
        "body": {"self_ref": "#/body", "children": [{"$ref": "#/groups/0"}]},
        "groups": [{"self_ref": "#/groups/0", "children": [{"$ref": "#/groups/0"}, {"$ref": "#/texts/0"}]}],
        "texts": [{"self_ref": "#/texts/0", "text": "hello", "prov": [{"page_no": 2}]}],
    }
    assert _items_with_pages(json.dumps(looped).encode()) == [("hello", (2,))]  # a reference loop ends
