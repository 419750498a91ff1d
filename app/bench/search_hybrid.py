"""The hybrid and filtered part of ``chronos bench search``: ``search_chunks_hybrid()`` latency at N
chunks (hybrid, text, vector with recall@10), and recall@10 + latency under a collection holding 1 % of
the vectors, one holding 30 %, a metadata filter (10 %) and 1 % / 30 % document filters, against an exact
scan of the filtered vectors. Every figure's queries must have gone through the HNSW index when the
function chose it: the bench counts the index's scans (``hnsw_scans``), it does not trust one EXPLAIN.
Latencies are timed one search a transaction (as the CLI and the API search); the scans, recall and
hits outside a filter come from the same searches run again in one transaction (the scan counters are
per transaction), untimed.

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


def collection_of(n: int, documents: int) -> str:
    """The bench's collections: ``one_pct`` holds the first 1 % of the documents, ``thirty_pct`` the
    next 30 %, ``default`` the rest (documents are in no order the vectors know of)."""
    if n < max(1, documents // 100):
        return "one_pct"
    if n < max(1, documents // 100) + max(1, documents * 30 // 100):
        return "thirty_pct"
    return "default"


async def hnsw_scans(conn: Any) -> int:
    """HNSW index scans in the current transaction (PostgreSQL's per-transaction counters)."""
    return int(await conn.fetchval(
        "SELECT coalesce(sum(pg_stat_get_xact_numscans(i.indexrelid)), 0) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'vectors'::regclass "
        "AND c.relname LIKE 'vectors_hnsw_%'"))  # fmt: skip


def _figures(times: list[float], recall: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                           "p95_ms": round(float(np.percentile(times, 95)), 2)}  # fmt: skip
    if recall is not None:
        out["recall_at_10"] = round(float(np.mean(recall)), 4)
    return out | extra


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
                              "last_position", "collection", "metadata"],
        records=[(d, f"bench-{n:05d}.md", "searchable", "text/markdown", "cli", 1, 0,
                  collection_of(n, len(unique_docs)), {"dept": f"d{n % 10}"}) for n, d in enumerate(unique_docs)],
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
    # VACUUM, not only ANALYZE: rows just COPYed have no hint bits, so the first query to read each one
    # looks its transaction up and dirties its page. Measured that way, the first mode to run (and a text
    # side that reads thousands of rows per question) paid for what autovacuum does after a bulk load.
    await conn.execute("VACUUM (ANALYZE) chunk_rows")
    await conn.execute("VACUUM (ANALYZE) vectors")
    return texts


async def hybrid_runs(
    conn: Any, ids: list[uuid.UUID], texts: list[str], data: np.ndarray, picks: np.ndarray, qs: np.ndarray,
    model: str, ef: int, function: str = "search_chunks_hybrid",
) -> dict[str, Any]:  # fmt: skip
    """p50/p95 of ``function`` (hybrid, text, vector with recall@10), and recall@10 + latency under
    collection, metadata and document filters, each against an exact scan of what the filter allows."""
    await conn.execute(f"UPDATE settings SET value = '{int(ef)}' WHERE key = 'hnsw_ef_search'")
    questions = [" ".join(texts[int(i)].split()[:8]) for i in picks]
    sql = (f"SELECT chunk_id, document_id FROM {function}($1, $2::vector, 10, $3, $4, NULL, $5::uuid[], "
           "NULL, NULL, NULL, NULL, NULL, $6::text[], $7::jsonb[])")  # fmt: skip
    if function.endswith("_before"):  # the function as it was, without collections and metadata
        sql = f"SELECT chunk_id, document_id FROM {function}($1, $2::vector, 10, $3, $4, NULL, $5::uuid[])"
    docs = document_of(ids)
    unique_docs = list(dict.fromkeys(docs))
    truth_sql = ("SELECT v.chunk_id FROM vectors v JOIN documents d USING (document_id) WHERE v.model = $1 "
                 "AND ($2::uuid[] IS NULL OR v.document_id = ANY ($2)) "
                 "AND ($3::text[] IS NULL OR d.collection = ANY ($3)) AND ($4::jsonb IS NULL OR d.metadata @> $4) "
                 "ORDER BY v.embedding <=> $5::vector LIMIT 10")  # exact: not the index's expression  # fmt: skip

    doc_at = dict(enumerate(unique_docs))

    async def run(mode: str, chosen: list[uuid.UUID] | None = None, collections: list[str] | None = None,
                  meta: dict[str, Any] | None = None, exact: bool = False) -> dict[str, Any]:  # fmt: skip
        args = () if function.endswith("_before") else (collections, None if meta is None else [meta])
        if function.endswith("_before") and (collections or meta):
            return {}
        times, recall, scans, outside = [], [], 0, 0
        allowed = None if chosen is None else set(chosen)
        if collections is not None or meta is not None:  # what the bench's layout lets through
            allowed = {d for n, d in doc_at.items()
                       if (collections is None or collection_of(n, len(unique_docs)) in collections)
                       and (meta is None or meta == {"dept": f"d{n % 10}"})}  # fmt: skip
        for q, v in zip(questions, qs, strict=True):  # timed: one search a transaction, as clients search
            t = time.perf_counter()
            await conn.fetch(sql, q, v, model, mode, chosen, *args)
            times.append((time.perf_counter() - t) * 1000)
        async with conn.transaction():  # untimed: the same searches, counted (the counters are per transaction)
            for q, v in zip(questions, qs, strict=True):
                truth = None
                if exact:
                    truth = {r[0] for r in await conn.fetch(truth_sql, model, chosen, collections, meta, v)}
                before = await hnsw_scans(conn)
                rows = await conn.fetch(sql, q, v, model, mode, chosen, *args)
                scans += (await hnsw_scans(conn)) - before
                if truth is not None:
                    recall.append(len({r[0] for r in rows} & truth) / max(1, len(truth)))
                if allowed is not None:
                    outside += sum(r[1] not in allowed for r in rows)
        return _figures(times, recall if exact else None, hnsw_scans_per_query=round(scans / len(questions), 2),
                        hits_outside_filter=outside)  # fmt: skip

    # Warm the caches with every question once, unmeasured: after a bulk load the chunk rows are not in
    # shared buffers (COPY and VACUUM go through small ring buffers), so the first search to read a row
    # copies its page in from the OS cache, and whichever function ran first paid for the other.
    for q, v in zip(questions, qs, strict=True):
        await conn.fetch(sql, q, v, model, "hybrid", None, *(() if function.endswith("_before") else (None, None)))
    out: dict[str, Any] = {}
    for mode in ("hybrid", "text"):
        out[mode] = await run(mode)
    out["vector"] = await run("vector", exact=True)
    by_collection = {name: [d for n, d in enumerate(unique_docs) if collection_of(n, len(unique_docs)) == name]
                     for name in ("one_pct", "thirty_pct")}  # fmt: skip
    for name, members in by_collection.items():
        for mode in ("vector", "hybrid"):
            fig = await run(mode, None, [name], exact=mode == "vector")
            if fig:
                out[f"{mode}_collection_{name}"] = fig | {"share": round(len(members) / len(unique_docs), 3)}
    for mode in ("vector", "hybrid"):
        fig = await run(mode, None, None, {"dept": "d3"}, exact=mode == "vector")
        if fig:
            out[f"{mode}_metadata_dept_10pct"] = fig
    rng = np.random.default_rng(9)
    for share in (0.01, 0.3):  # random documents: the filter knows nothing of the vectors
        picked = rng.choice(len(unique_docs), max(1, int(len(unique_docs) * share)), replace=False)
        chosen = [unique_docs[int(i)] for i in picked]
        out[f"vector_filtered_{round(share * 100)}pct"] = await run("vector", chosen, exact=True)
    return out
