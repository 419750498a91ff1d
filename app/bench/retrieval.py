"""``chronos bench retrieval``: does the chunk with the answer come back? recall@k and MRR by question
kind (app/bench/retrieval_corpus.py) for Chronos's three search modes and for LlamaIndex, same run.

Chronos: the real pipeline (upload, Docling, chunking with context, embedding with all-MiniLM-L6-v2,
projections) into a scratch database, then ``search_chunks_hybrid()`` for every question in each mode.

LlamaIndex: the same Docling conversions (each document's Markdown, with ``file_name`` metadata as its
readers set it), split by LlamaIndex's ``IngestionPipeline`` with a ``SentenceSplitter`` of the same
size in the same tokenizer; each node is embedded the way LlamaIndex's embedding step embeds it
(``node.get_content(MetadataMode.EMBED)``: its metadata, here the file name, then its text) with the
same model, and retrieved by exact cosine top-k (what ``VectorStoreIndex``'s default store does). It
has no pages, so page-checked questions count its ``page_unknown``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.bench.retrieval_corpus import Corpus, Question, generate
from app.bench.retrieval_score import RankedHit, misses, score
from app.services.search import MODES, search_rows
from events.sqlfiles import query

MODEL = "local:all-MiniLM-L6-v2"
DEPTH = 10  # hits fetched per question (MRR is over these)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("retrieval", help="recall@k and MRR by question kind: Chronos modes vs LlamaIndex")
    p.add_argument("--cities", type=int, default=8, help="cities (two briefs each; default 8)")
    p.add_argument("--long-pdfs", type=int, default=2, help="long PDFs with needles (default 2)")
    p.add_argument("--pages", type=int, default=40, help="pages of each long PDF (default 40)")
    p.add_argument("--no-llamaindex", action="store_true", help="skip the LlamaIndex side")
    p.add_argument("--json", action="store_true", help="the figures as JSON")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    from app.bench.retrieval_corpus import MAX_MANUALS

    if args.long_pdfs > MAX_MANUALS:
        print(f"chronos bench retrieval: --long-pdfs is at most {MAX_MANUALS} (each needle needs a depot of its own)",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    result = await run_bench(cities=args.cities, long_pdfs=args.long_pdfs, pages=args.pages,
                             llamaindex=not args.no_llamaindex, quiet=True)  # fmt: skip
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print_table(result)
    return 0


async def run_bench(*, cities: int, long_pdfs: int, pages: int, llamaindex: bool, quiet: bool) -> dict[str, Any]:
    from app.bench.scratch import scratch_database

    with tempfile.TemporaryDirectory(prefix="chronos-retrieval-") as tmp:
        corpus = generate(Path(tmp), cities=cities, long_pdfs=long_pdfs, pages=pages)
        async with scratch_database("chronos_bench_retrieval") as dsn:
            return await run_on(dsn, corpus, llamaindex=llamaindex, quiet=quiet)


async def run_on(dsn: str, corpus: Corpus, *, llamaindex: bool, quiet: bool) -> dict[str, Any]:
    """Ingest ``corpus`` into the (empty, migrated) database at ``dsn`` and score every system."""
    from app.commands.ingest import Item, upload_all, wait_until_final
    from app.config import Settings
    from app.embedders import get_embedder
    from app.pipeline.backend import backend_services
    from app.pipeline.worker import Worker
    from app.runtime import open_runtime
    from app.supervisor import Supervisor
    from projections.runner import catch_up_all

    settings = replace(Settings.from_env(), database_url=dsn)
    embedder = await asyncio.to_thread(get_embedder, MODEL, settings)
    questions = corpus.questions
    q_vectors = (await embedder.embed([q.question for q in questions])).vectors
    out: dict[str, Any] = {"documents": len(corpus.files), "questions": len(questions), "notes": corpus.notes,
                           "kinds": sorted({q.kind for q in questions}), "model": MODEL, "systems": {}}  # fmt: skip
    async with open_runtime(settings) as rt:
        started = time.perf_counter()
        results, rejected = await upload_all(rt, [Item(p, None) for p in corpus.files], force=False, quiet=quiet)
        ids = list(dict.fromkeys(r.document_id for r in results))
        stop = asyncio.Event()
        task = asyncio.create_task(Supervisor(backend_services(rt, Worker(rt, concurrency=2))).run(stop))
        try:
            state = await wait_until_final(rt, ids, quiet, None)
            await catch_up_all(rt.pool, rt.dsn)
        finally:
            stop.set()
            await task
        out["ingest_s"] = round(time.perf_counter() - started, 1)
        out["failed"] = [p.failure for p in state.values() if p.status != "searchable"] + [
            r["reason"] for r in rejected
        ]
        out["chunks"] = await rt.pool.fetchval(query("bench", "chunk_count"))
        for mode in MODES:
            ranked: list[list[RankedHit]] = []
            t0 = time.perf_counter()
            for q, vector in zip(questions, q_vectors, strict=True):
                hits = await search_rows(rt.pool, q.question, vector, DEPTH, MODEL, mode)
                ranked.append([RankedHit(h.filename, h.text, tuple(h.pages)) for h in hits])
            elapsed = time.perf_counter() - t0
            out["systems"][f"chronos {mode}"] = {**score(questions, ranked), "misses": misses(questions, ranked),
                                                 "ms_per_query": round(1000 * elapsed / len(questions), 2)}  # fmt: skip
        if llamaindex:
            out["systems"]["llamaindex"] = await llamaindex_side(rt.pool, questions, q_vectors, embedder)
    return out


async def llamaindex_side(pool: Any, questions: list[Question], q_vectors: np.ndarray, embedder: Any) -> dict[str, Any]:
    try:
        from llama_index.core import Document
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.schema import MetadataMode
    except ImportError as exc:  # pragma: no cover - llama-index-core is a dependency
        return {"skipped": f"LlamaIndex is not installed ({exc}); pip install -e '.[bench]'"}
    from events.blobs import PgBlobStore

    blobs = PgBlobStore(pool)
    rows = await pool.fetch(
        "SELECT d.filename, e.data -> 'markdown' ->> 'sha256' AS markdown FROM documents d "
        "JOIN events e ON e.type = 'DocumentConverted' AND e.data ->> 'conversion_id' = d.conversion_id::text "
        "WHERE d.status = 'searchable'"
    )
    docs = [Document(text=(await blobs.get_bytes(r["markdown"])).decode("utf-8"),
                     metadata={"file_name": r["filename"]}) for r in rows]  # fmt: skip
    overhead = embedder.count_tokens([""])[0]

    def count(text: str) -> list[int]:
        return [0] * max(0, embedder.count_tokens([text])[0] - overhead)

    splitter = SentenceSplitter(chunk_size=embedder.max_tokens - overhead, chunk_overlap=32, tokenizer=count)
    nodes = await asyncio.to_thread(IngestionPipeline(transformations=[splitter]).run, documents=docs)
    inputs = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    matrix = (await embedder.embed(inputs)).vectors
    matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = q_vectors / np.linalg.norm(q_vectors, axis=1, keepdims=True)
    ranked: list[list[RankedHit]] = []
    for qv in queries:
        order = np.argsort(-(matrix @ qv))[:DEPTH]
        ranked.append([RankedHit(str(nodes[i].metadata.get("file_name")), nodes[i].get_content(), ()) for i in order])
    return {**score(questions, ranked), "misses": misses(questions, ranked), "nodes": len(nodes)}


def print_table(result: dict[str, Any]) -> None:
    kinds = result["kinds"]
    print(f"{result['documents']} documents, {result['chunks']} Chronos chunks, {result['questions']} questions, "
          f"model {result['model']}; ingest {result['ingest_s']} s")  # fmt: skip
    for note in result["notes"]:
        print(note)
    if result["failed"]:
        print(f"not searchable: {result['failed']}")
    header = f"{'system':<18}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR':>7}" + "".join(f"{k + ' R@5':>16}" for k in kinds)
    print(header)
    for name, s in result["systems"].items():
        if "skipped" in s:
            print(f"{name:<18}skipped: {s['skipped']}")
            continue
        o = s["overall"]
        cells = "".join(f"{s['by_kind'].get(k, {}).get('recall@5', 0):>16.3f}" for k in kinds)
        print(f"{name:<18}{o['recall@1']:>7.3f}{o['recall@5']:>7.3f}{o['recall@10']:>7.3f}{o['mrr']:>7.3f}{cells}")
    for name, s in result["systems"].items():
        for m in s.get("misses", [])[:8]:
            print(f"  miss ({name}, {m['kind']}): {m['question']} -> expected {m['expected']} "
                  f"[{m['answer']}], rank {m['rank']}, first hit {m['first_hit']}")  # fmt: skip
