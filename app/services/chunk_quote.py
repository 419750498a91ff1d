"""The quote of a chunk reprocess (new sizes or a new context template): what re-embedding will cost.

A re-chunk is free in itself, but every chunk whose embed input (context + text) changes is embedded
again with the document's model, and with an OpenAI model that is paid. The quote chunks each document
now, with the request's settings, through the chunk stage's own code (app/pipeline/chunk_plan.py), and
prices the inputs the embedding cache lacks for each model that will embed the new set: the document's
model and the target of a model switch in progress. Inputs that do not change (the same context and
text) are in the cache and cost nothing, so going back to an earlier template is free. A document only
local models embed costs CPU time, which is not quoted: it is counted, not chunked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from app import costs
from app.catalogue.content import embed_input
from app.catalogue.ids import stream_for
from app.config import Settings
from app.pipeline.chunk_plan import ChunkRequest, chunk_conversion, sizing_embedder, switch_targets
from app.pipeline.stream import DocumentStream
from events.blobs import PgBlobStore
from events.sqlfiles import query
from events.store import EventStore

if TYPE_CHECKING:
    from app.embedders.models import ModelSpec
    from app.services.reprocess import StageRequest


@dataclass
class ModelTally:
    """What one model will embed of the new chunk sets."""

    inputs: int = 0  # distinct embed inputs the cache lacks (per document)
    cached: int = 0  # chunks whose input the cache holds: free
    texts: list[str] = field(default_factory=list)  # the inputs to embed (OpenAI models: counted for the price)


async def quote_chunking(
    pool: asyncpg.Pool, request: StageRequest, document_ids: Sequence[str], settings: Settings
) -> dict[str, Any]:
    """{"resource", "quantity", "usd", ...} of chunking ``document_ids`` again as ``request`` asks:
    tokens (OpenAI models) of the new chunk sets' embed inputs the cache lacks, with a breakdown."""
    from app.chunk_context import ContextTemplateError, check_template
    from app.chunking import ChunkingError
    from app.embedders import EmbedderUnavailable

    if request.context_template is not None:
        check_template(request.context_template)  # a bad template is refused before anything is asked
    store, blobs = EventStore(pool), PgBlobStore(pool)
    targets = await switch_targets(pool)
    tallies: dict[str, ModelTally] = {}
    chunks = unconverted = free = 0
    failed: dict[str, str] = {}
    for doc in document_ids:
        stream = await DocumentStream.read(store, stream_for(doc))
        state, conversion = stream.state, stream.current_conversion
        if state is None or state.deleted or conversion is None:
            unconverted += 1  # chunked when its conversion lands, embedded then: quoted by nobody yet
            continue
        specs = _specs([state.model, *targets], settings)
        if not any(spec.provider == "openai" for spec in specs):
            free += 1  # embedded locally: CPU time only, nothing to price (and nothing chunked for the quote)
            continue
        wanted = ChunkRequest.asked(request.chunk_size, request.chunk_overlap, request.context_template, state)
        try:
            embedder = await sizing_embedder(pool, settings, state.model)
            made, contents, _ = await chunk_conversion(blobs, embedder, state, conversion, wanted)
        except (ChunkingError, ContextTemplateError, EmbedderUnavailable) as exc:
            failed[doc] = str(exc)  # asked all the same: the chunk stage records the failure with its reason
            continue
        chunks += len(made)
        inputs = {c.embed_sha256 or c.text_sha256: embed_input(x.context or "", x.text)
                  for c, x in zip(made, contents, strict=True)}  # fmt: skip
        for spec in specs:
            held = {r["text_sha256"] for r in await pool.fetch(query("embeddings", "cached_text_hashes"), spec.stored,
                                                               spec.dimensions, list(inputs))}  # fmt: skip
            tally = tallies.setdefault(spec.stored, ModelTally())
            tally.cached += sum(1 for c in made if (c.embed_sha256 or c.text_sha256) in held)
            missing = [text for key, text in inputs.items() if key not in held]
            tally.inputs += len(missing)
            if spec.provider == "openai":
                tally.texts += missing
    priced = await _priced(tallies, settings, chunks=chunks, unconverted=unconverted, failed=failed)
    return priced | {"local_documents": free}


def _specs(names: list[str | None], settings: Settings) -> list[ModelSpec]:
    """The models that will embed a document's new chunk set (a switch target not usable here is
    skipped, as the embed stage skips it)."""
    from app.embedders import EmbedderUnavailable
    from app.embedders.models import resolve_model

    out: dict[str, ModelSpec] = {}
    for name in dict.fromkeys(names):
        try:
            spec = resolve_model(name, settings)
        except EmbedderUnavailable:
            continue
        out.setdefault(spec.stored, spec)
    return list(out.values())


async def _priced(
    tallies: dict[str, ModelTally], settings: Settings, *, chunks: int, unconverted: int, failed: dict[str, str]
) -> dict[str, Any]:
    from app.embedders.models import resolve_model
    from app.embedders.pricing import count_texts

    tokens, usd = 0, 0.0
    models: dict[str, dict[str, Any]] = {}
    for name, tally in tallies.items():
        spec = resolve_model(name, settings)
        line: dict[str, Any] = {"embed_inputs": tally.inputs, "cached": tally.cached}
        if spec.provider == "openai":
            counted = await asyncio.to_thread(count_texts, tally.texts) if tally.texts else 0
            unit = costs.openai_tokens(0, spec.name).unit_price_usd
            line |= {"tokens": counted, "unit_price_usd": unit, "usd": counted * unit}
            tokens, usd = tokens + counted, usd + counted * unit
        models[name] = line
    paid = any(resolve_model(n, settings).provider == "openai" for n in tallies)
    return {
        "resource": "tokens" if paid else None, "quantity": tokens, "usd": usd, "chunks": chunks, "models": models,
        "not_converted": unconverted, "cannot_chunk": failed,
    }  # fmt: skip
