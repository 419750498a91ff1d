"""Reuse embeddings already made: the same text with the same model and dimensions is embedded once.

Only reads ``embedding_cache`` (keyed by model, dimensions, sha256 of the text); the projections
fill it from ChunksEmbedded and EmbeddingsCached events. ``known`` adds vectors the caller has
already (e.g. paid for by an earlier, failed attempt: app.embedders.salvage). Texts not found, and
repeated texts within one call, are sent to the embedder once each. When the embedder fails after
some of its requests succeeded, the error's ``partial`` holds them (texts, vectors, cost lines).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import numpy as np

from app.embedders.base import CachedEmbedResult, Embedder, text_sha256
from events.sqlfiles import query

log = logging.getLogger(__name__)


async def cached_vectors(
    conn_or_pool: asyncpg.Pool | asyncpg.Connection, embedder: Embedder, hashes: Sequence[str]
) -> dict[str, np.ndarray]:
    """{text_sha256: vector} for the hashes the cache holds for this embedder's model and size."""
    if not hashes:
        return {}
    rows = await conn_or_pool.fetch(
        query("embeddings", "cached_embeddings"), embedder.model, embedder.dimensions, sorted(set(hashes))
    )
    found: dict[str, np.ndarray] = {}
    for row in rows:
        vector = _as_array(row["embedding"])
        if vector.shape != (embedder.dimensions,):
            log.warning(
                "Ignoring a cached embedding of the wrong size",
                extra={"model": embedder.model, "text_sha256": row["text_sha256"], "shape": vector.shape},
            )
            continue
        found[row["text_sha256"]] = vector
    return found


def _as_array(value: Any) -> np.ndarray:
    # pgvector's asyncpg codec gives numpy arrays; without it the text form '[1,2,3]' arrives.
    if isinstance(value, str):
        return np.asarray([float(x) for x in value.strip("[]").split(",") if x], dtype=np.float32)
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if callable(to_numpy) else value, dtype=np.float32)


async def embed_with_cache(
    conn_or_pool: asyncpg.Pool | asyncpg.Connection,
    embedder: Embedder,
    texts: Sequence[str],
    known: Mapping[str, np.ndarray] | None = None,
) -> CachedEmbedResult:
    """Vectors for every text (rows in input order); only texts neither cached nor ``known`` reach the
    embedder."""
    items = list(texts)
    hashes = [text_sha256(t) for t in items]
    found = dict(known or {})
    found.update(await cached_vectors(conn_or_pool, embedder, [h for h in hashes if h not in found]))
    miss_index: dict[str, int] = {}
    miss_texts: list[str] = []
    for text, digest in zip(items, hashes, strict=True):
        if digest not in found and digest not in miss_index:
            miss_index[digest] = len(miss_texts)
            miss_texts.append(text)
    out = np.empty((len(items), embedder.dimensions), dtype=np.float32)
    tokens, cpu_s, cost = 0, 0.0, []
    if miss_texts:
        result = await embedder.embed(miss_texts)
        tokens, cpu_s, cost = result.tokens, result.cpu_s, list(result.cost)
        for digest, row in miss_index.items():
            found_row = result.vectors[row]
            found[digest] = found_row
    reused = 0
    for i, digest in enumerate(hashes):
        out[i] = found[digest]
        reused += digest not in miss_index
    log.info(
        "Embedded texts",
        extra={
            "model": embedder.model,
            "texts": len(items),
            "reused": reused,
            "embedded": len(miss_texts),
            "tokens": tokens,
        },
    )
    return CachedEmbedResult(out, reused, len(miss_texts), tokens, cpu_s, cost)
