"""The hybrid and filtered part of ``chronos bench search``: ``search_chunks_hybrid()`` latency at N
chunks, and recall@10 under 1 % and 30 % document filters against an exact scan of the filtered vectors.

The N vectors loaded by ``bench search`` get chunk rows (pseudo-words drawn from a Zipf distribution
over a 20,000-word vocabulary, so the tsvector and its GIN index have real work), documents of 100
chunks each, and the bookkeeping rows search reads (``vector_sets``, ``embedding_models``). Each
query's question is the first words of the chunk its vector was perturbed from.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import numpy as np

PER_DOCUMENT = 100
SYLLABLES = ("ka", "lo", "ri", "sen", "tor", "mi", "ba", "dre", "qua", "vel", "nor", "ith", "ul", "pra", "zo", "gen")


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    """``size`` distinct pseudo-words (natural text has a long tail of rare words; a tiny vocabulary
    would make every word common and every query a scan)."""
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))] = None
    return list(words)


def document_of(ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """A document id for each chunk: consecutive runs of PER_DOCUMENT chunks share one."""
    docs = [uuid.UUID(int=i + 1) for i in range((len(ids) + PER_DOCUMENT - 1) // PER_DOCUMENT)]
    return [docs[i // PER_DOCUMENT] for i in range(len(ids))]


async def load_rows(conn: Any, ids: list[uuid.UUID], model: str, dims: int) -> list[str]:
    """Chunk rows, documents and search bookkeeping for the loaded vectors; returns the chunk texts."""
    rng = random.Random(3)
    docs = document_of(ids)
    vocabulary = _vocabulary(rng, 20_000)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]  # Zipf, like natural text
    texts = [
        " ".join(rng.choices(vocabulary, weights, k=60)).capitalize() + f". Reference CHRONOS-{i}."
        for i in range(len(ids))
    ]
    unique_docs = list(dict.fromkeys(docs))
    await conn.copy_records_to_table(
        "documents", columns=["document_id", "filename", "status", "media_type", "source", "stream_version",
                              "last_position"],
        records=[(d, f"bench-{n:05d}.md", "searchable", "text/markdown", "cli", 1, 0)
                 for n, d in enumerate(unique_docs)],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "chunk_rows", columns=["chunk_id", "document_id", "chunk_set_id", "ordinal", "text", "text_sha256",
                               "serving", "served_from", "title", "context"],
        records=[(c, d, d, i % PER_DOCUMENT, t, "", True, 0, f"Bench document {d.int}", f"Bench document {d.int}")
                 for i, (c, d, t) in enumerate(zip(ids, docs, texts, strict=True))],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "vector_sets", columns=["document_id", "model", "chunk_set_id", "dimensions", "vector_count", "vectors_blob",
                                "position"],
        records=[(d, model, d, dims, PER_DOCUMENT, "", 0) for d in unique_docs],
    )  # fmt: skip
    await conn.execute("INSERT INTO embedding_models (model, dimensions, index_name, first_position) "
                       "VALUES ($1, $2, '', 0) ON CONFLICT (model) DO NOTHING", model, dims)  # fmt: skip
    await conn.execute("ANALYZE chunk_rows")
    await conn.execute("ANALYZE vectors")
    return texts


async def hybrid_runs(
    conn: Any, ids: list[uuid.UUID], texts: list[str], data: np.ndarray, picks: np.ndarray, qs: np.ndarray,
    model: str, ef: int,
) -> dict[str, Any]:  # fmt: skip
    """p50/p95 of hybrid search, and recall@10 + latency under a 1 % document filter."""
    await conn.execute(f"UPDATE settings SET value = '{int(ef)}' WHERE key = 'hnsw_ef_search'")
    questions = [" ".join(texts[int(i)].split()[:8]) for i in picks]
    sql = "SELECT chunk_id FROM search_chunks_hybrid($1, $2::vector, 10, $3, $4, NULL, $5::uuid[])"
    for q, v in zip(questions[:20], qs[:20], strict=True):  # warm caches, unmeasured
        await conn.fetch(sql, q, v, model, "hybrid", None)
    out: dict[str, Any] = {}
    for mode in ("hybrid", "text"):
        times = []
        for q, v in zip(questions, qs, strict=True):
            t = time.perf_counter()
            await conn.fetch(sql, q, v, model, mode, None)
            times.append((time.perf_counter() - t) * 1000)
        out[mode] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                     "p95_ms": round(float(np.percentile(times, 95)), 2)}  # fmt: skip
    docs = document_of(ids)
    unique_docs = list(dict.fromkeys(docs))
    rng = np.random.default_rng(9)
    for share in (0.01, 0.3):  # 1 %: an exact scan of the filtered vectors; 30 %: HNSW iterative scan
        times, recall = [], []
        for q, v in zip(questions, qs, strict=True):
            picked = rng.choice(len(unique_docs), max(1, int(len(unique_docs) * share)), replace=False)
            chosen = [unique_docs[int(i)] for i in picked]
            truth = {r[0] for r in await conn.fetch(
                "SELECT chunk_id FROM vectors WHERE model = $1 AND document_id = ANY ($2::uuid[]) "
                "ORDER BY embedding <=> $3::vector LIMIT 10", model, chosen, v)}  # fmt: skip
            t = time.perf_counter()
            got = {r[0] for r in await conn.fetch(sql, q, v, model, "vector", chosen)}
            times.append((time.perf_counter() - t) * 1000)
            recall.append(len(got & truth) / max(1, len(truth)))
        out[f"vector_filtered_{round(share * 100)}pct"] = {
            "p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "recall_at_10": round(float(np.mean(recall)), 4),
        }  # fmt: skip
    return out
