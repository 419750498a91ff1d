"""What embedding documents with a model will cost, before asking for it (the reprocess quote).

The model is resolved with the parser ``get_embedder`` uses (app.embedders.models), so the quote and
the embedding agree on what ``text-embedding-3-large`` or ``openai:...@512`` mean, and priced with
app.costs (the Batch API at its own, half, price). Texts the embedding cache holds for that model and
size cost nothing; the rest are counted with the model's tokenizer (cl100k_base for OpenAI).
Local models cost CPU time only, which is not quoted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

from app import costs
from app.config import Settings
from app.embedders.base import EmbedderUnavailable
from app.embedders.encoding import ENCODING, load_encoding
from app.embedders.models import resolve_model
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
    rows = await pool.fetch(query("embeddings", "quote_uncached_chunks"), list(document_ids), spec.stored,
                            spec.dimensions, f"tiktoken:{ENCODING}")  # fmt: skip
    counted = sum(int(r["token_count"]) for r in rows if r["text"] is None)
    texts = [str(r["text"]) for r in rows if r["text"] is not None]
    if texts:
        counted += await asyncio.to_thread(_count, texts)
    return {"resource": "tokens", "quantity": counted, "usd": counted * line.unit_price_usd, "model": spec.stored,
            "unit_price_usd": line.unit_price_usd, "batch_api": batch_api}  # fmt: skip


def _count(texts: list[str]) -> int:
    encoding = load_encoding(ENCODING)
    return sum(len(ids) for ids in encoding.encode_ordinary_batch(texts))
