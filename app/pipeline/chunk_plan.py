"""What the chunk stage makes of a document's conversion, for the stage and for the reprocess quote.

One function decides the chunks, so a quote for ``chronos reprocess --stage chunk`` (new sizes or a new
context template) is computed by the code that will make them: the quote is the embedding of exactly
the inputs the new chunk set will have and the cache lacks (app/services/chunk_quote.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from app.catalogue import events as ev
from app.catalogue.state import DocumentState
from app.config import Settings
from events.blobs import BlobStore
from events.sqlfiles import query

if TYPE_CHECKING:
    from app.embedders import Embedder


@dataclass(frozen=True)
class ChunkRequest:
    """The settings a chunk job runs with (None: the chunker's defaults for the embedder)."""

    chunk_size: int | None
    chunk_overlap: int | None
    context_template: str

    @classmethod
    def of(cls, params: Mapping[str, Any], state: DocumentState) -> ChunkRequest:
        """A job's own settings, else the document's sticky ones (its latest request's), else the defaults."""
        from app.chunk_context import DEFAULT_TEMPLATE

        template = params.get("context_template")
        if template is None:
            template = state.context_template if state.context_template is not None else DEFAULT_TEMPLATE
        return cls(
            chunk_size=params.get("chunk_size", state.chunk_settings[0]),
            chunk_overlap=params.get("chunk_overlap", state.chunk_settings[1]),
            context_template=template,
        )

    @classmethod
    def asked(
        cls, chunk_size: int | None, chunk_overlap: int | None, context_template: str | None, state: DocumentState
    ) -> ChunkRequest:
        """The settings a ChunkingRequested with these fields will run with (what the state's reducer
        keeps of it: sizes as asked, None the defaults; the template as asked, None the document's own)."""
        params = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "context_template": context_template}
        return cls.of({k: v for k, v in params.items() if v is not None}, _after(state, chunk_size, chunk_overlap))


def _after(state: DocumentState, chunk_size: int | None, chunk_overlap: int | None) -> DocumentState:
    import dataclasses

    return dataclasses.replace(state, chunk_settings=(chunk_size, chunk_overlap))


async def switch_targets(pool: asyncpg.Pool) -> list[str]:
    """Models an ``--all`` embedding reprocess asked for (a model switch), newest first (at most two:
    the one being rolled out and the one before it, which answers searches until the switch completes)."""
    rows = await pool.fetch(query("jobs", "embedding_switch_targets"))
    return [r["model"] for r in rows if r["model"]]


async def sizing_embedder(pool: asyncpg.Pool, settings: Settings, model: str | None) -> Embedder:
    """The embedder whose window the chunks must fit: the document's model, or a switch target with a
    smaller window (those chunks will be embedded with it too). EmbedderUnavailable for ``model``."""
    from app.embedders import EmbedderUnavailable, get_embedder

    embedder = await asyncio.to_thread(get_embedder, model, settings)
    for target in await switch_targets(pool):
        try:
            other = await asyncio.to_thread(get_embedder, target, settings)
        except EmbedderUnavailable:
            continue
        if other.max_tokens < embedder.max_tokens:
            embedder = other
    return embedder


async def chunk_conversion(
    blobs: BlobStore, embedder: Embedder, state: DocumentState, conversion: ev.DocumentConverted, wanted: ChunkRequest
) -> tuple[list[ev.Chunk], list[ev.ChunkContent], ev.ChunkParameters]:
    """The chunks (each with its ``embed_sha256``), their contents and parameters; ChunkingError or
    ContextTemplateError for settings that cannot work."""
    from app.chunking import chunk_with_context

    docling_json = await blobs.get_bytes(conversion.docling_json.sha256)
    markdown = (await blobs.get_bytes(conversion.markdown.sha256)).decode("utf-8")
    return await asyncio.to_thread(
        chunk_with_context,
        docling_json,
        markdown,
        embedder_max_tokens=embedder.max_tokens,
        count_tokens=embedder.count_tokens,
        tokenizer_name=embedder.tokenizer_name(),
        chunk_size=wanted.chunk_size,
        chunk_overlap=wanted.chunk_overlap,
        filename=state.filename,
        context_template=wanted.context_template,
    )
