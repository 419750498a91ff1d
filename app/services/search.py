"""Semantic search over the projections: embed the question with the model the active vectors
were made with (loaded with the runtime's settings), then ``search_chunks()`` (per-model HNSW index)
in PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import numpy as np

from app.config import Settings
from app.errors import InvalidRequest, NotFound
from events.store import EventStore

logger = logging.getLogger(__name__)


class NothingSearchable(NotFound):
    """No document has vectors yet: ingest documents first (chronos ingest PATH --wait)."""

    code = "nothing_searchable"


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    document_id: str
    filename: str
    ordinal: int
    text: str
    pages: list[int]
    heading_path: list[str]
    score: float
    model: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def active_model(pool: asyncpg.Pool) -> tuple[str, int] | None:
    row = await pool.fetchrow("SELECT model, dimensions FROM v_search_models WHERE active")
    return (row["model"], row["dimensions"]) if row else None


async def search_vector(pool: asyncpg.Pool, vector: np.ndarray, k: int, model: str) -> list[SearchHit]:
    rows = await pool.fetch("SELECT * FROM search_chunks($1::vector, $2, $3)", np.asarray(vector, np.float32), k, model)
    return [
        SearchHit(
            chunk_id=str(r["chunk_id"]),
            document_id=str(r["document_id"]),
            filename=r["filename"],
            ordinal=r["ordinal"],
            text=r["text"],
            pages=list(r["pages"]),
            heading_path=list(r["heading_path"]),
            score=float(r["score"]),
            model=model,
        )
        for r in rows
    ]


async def search(
    pool: asyncpg.Pool,
    settings: Settings,
    question: str,
    k: int = 5,
    model: str | None = None,
    *,
    store: EventStore | None = None,
    actor: str = "search",
) -> list[SearchHit]:
    """The ``k`` chunks nearest to ``question``; ``model`` defaults to the active search model. A paid
    query embedding is recorded as a cost (app.embedders.query_cost) through ``store`` (the caller's, so
    its notifier wakes the projections; one of its own on ``pool`` when None)."""
    if not question.strip():
        raise InvalidRequest("the question is empty")
    if k < 1 or k > 1000:
        raise InvalidRequest(f"k must be between 1 and 1000, not {k}")
    if model is None:
        found = await active_model(pool)
        if found is None:
            raise NothingSearchable(NothingSearchable.__doc__ or "")
        model = found[0]
    from app.embedders import get_embedder
    from app.embedders.query_cost import record_query_cost

    embedder = await asyncio.to_thread(get_embedder, model, settings)  # loading a model blocks: off the loop
    query_id = uuid.uuid4()
    result = await embedder.embed([question])
    own_store = store is None
    store = store or EventStore(pool)
    await record_query_cost(store, embedder.provider, result, query_id, actor)
    if own_store:
        await store.notifier.flush()
    hits = await search_vector(pool, result.vectors[0], k, model)
    logger.info("searched", extra={"action": "search", "model": model, "k": k, "hits": len(hits),
                                   "query_id": str(query_id), "tokens": result.tokens})  # fmt: skip
    return hits
