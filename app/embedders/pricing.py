"""What embedding documents with a model will cost, before asking for it (the reprocess quote).

The model is resolved with the parser ``get_embedder`` uses (app.embedders.models), so the quote and
the embedding agree on what ``text-embedding-3-large`` or ``openai:...@512`` mean, and priced with
app.costs (the Batch API at its own, half, price). What is quoted is what the embed stage (or a Batch
API job) will embed: each document's current chunk set (``documents.chunk_set_id``, its DocumentChunked
read through the codec), whether search serves it yet or not -- a document chunked but never embedded
(say its embedding failed for good) is quoted in full, not at $0. Texts the embedding cache holds for
that model and size cost nothing; the rest are counted once per document with the model's tokenizer
(cl100k_base for OpenAI): the chunk stage's own count when it used that tokenizer, else the texts (from
the chunk set's content blob) are counted here. Local models cost CPU time only, which is not quoted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

from app import costs
from app.catalogue import events as ev
from app.catalogue.codec import decode_payload
from app.catalogue.content import embed_inputs, load_content
from app.config import Settings
from app.embedders.base import EmbedderUnavailable
from app.embedders.encoding import ENCODING, load_encoding
from app.embedders.models import ModelSpec, resolve_model
from events.blobs import PgBlobStore
from events.sqlfiles import query


async def quote_embedding(
    pool: asyncpg.Pool, document_ids: Sequence[str], model: str | None, settings: Settings, *,
    batch_api: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """{"resource", "quantity", "usd", "model", "unit_price_usd", "batch_api"} for embedding the current
    chunk sets of ``document_ids`` with ``model``; EmbedderUnavailable for a model that cannot be used."""
    spec = resolve_model(model, settings)
    if spec.provider != "openai":
        if batch_api:
            raise EmbedderUnavailable(f"--batch-api is OpenAI's Batch API; {spec.stored} runs locally")
        return {"resource": None, "quantity": 0, "usd": 0.0, "model": spec.stored, "unit_price_usd": 0.0,
                "batch_api": False}  # fmt: skip
    try:
        line = costs.openai_tokens(0, spec.name, batch_api=batch_api)
    except KeyError as exc:
        raise EmbedderUnavailable(str(exc.args[0])) from exc
    counted = await uncached_tokens(pool, document_ids, spec)
    return {"resource": "tokens", "quantity": counted, "usd": counted * line.unit_price_usd, "model": spec.stored,
            "unit_price_usd": line.unit_price_usd, "batch_api": batch_api}  # fmt: skip


async def uncached_tokens(pool: asyncpg.Pool, document_ids: Sequence[str], spec: ModelSpec) -> int:
    """Tokens of the current chunk sets' texts the cache lacks for ``spec``, each text once per document."""
    tokenizer = f"tiktoken:{ENCODING}"
    sets: list[ev.DocumentChunked] = []
    for r in await pool.fetch(query("embeddings", "current_chunk_sets"), list(document_ids)):
        chunked = decode_payload(ev.DocumentChunked.TYPE, r["schema_version"], r["data"])
        assert isinstance(chunked, ev.DocumentChunked)
        sets.append(chunked)
    # The cache keys on what is embedded: the chunk's context and text (embed_sha256), else its text.
    hashes = sorted({_key(c) for s in sets for c in s.chunks})
    cached = {r["text_sha256"] for r in await pool.fetch(query("embeddings", "cached_text_hashes"), spec.stored,
                                                           spec.dimensions, hashes)} if hashes else set()  # fmt: skip
    counted = 0
    texts: list[str] = []
    blobs = PgBlobStore(pool)
    for chunked in sets:
        same_tokenizer = chunked.parameters.tokenizer == tokenizer
        wanted: dict[str, ev.Chunk] = {}
        for c in chunked.chunks:
            if _key(c) not in cached:
                wanted.setdefault(_key(c), c)
        contextual = any(c.embed_sha256 for c in chunked.chunks)  # token_count is the text's alone
        if same_tokenizer and not contextual and all(c.token_count is not None for c in wanted.values()):
            counted += sum(int(c.token_count or 0) for c in wanted.values())
            continue
        inputs = embed_inputs(await load_content(blobs, chunked))
        texts += [x for c, x in zip(chunked.chunks, inputs, strict=True) if wanted.pop(_key(c), None)]
    if texts:
        counted += await asyncio.to_thread(count_texts, texts)
    return counted


def _key(chunk: ev.Chunk) -> str:
    return chunk.embed_sha256 or chunk.text_sha256


def count_texts(texts: list[str]) -> int:
    """Tokens of ``texts`` with OpenAI's embedding tokenizer (what OpenAI bills)."""
    encoding = load_encoding(ENCODING)
    return sum(len(ids) for ids in encoding.encode_ordinary_batch(texts))
