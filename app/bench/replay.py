"""``chronos bench replay``: replay throughput on a synthetic log vs a plain COPY of the same rows.

The log: D documents × C chunks (random unit vectors, no model calls), each with the events the
stages append. Replay rebuilds every projection into shadow tables and swaps them in; the baseline
COPYs the same chunk and vector rows into plain tables of the same shape (same columns and keys,
no HNSW index) in the same run. HNSW index build time is reported separately.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from app import domain
from app.bench.scratch import scratch_database
from events.blobs import PgBlobStore
from events.connection import create_pool
from events.store import EventStore
from projections import copy
from projections.replay import replay
from projections.synthetic import SyntheticDocument, random_unit_vectors


async def run_bench(documents: int, chunks: int, dims: int, quiet: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    async with scratch_database("chronos_bench_replay") as dsn:
        pool = await create_pool(dsn, min_size=2, max_size=8)
        try:
            store, blobs = EventStore(pool), PgBlobStore(pool)
            docs: list[SyntheticDocument] = []
            for i in tqdm(range(documents), desc="log", disable=quiet):
                doc = SyntheticDocument(store, blobs, filename=f"doc-{i}.pdf")
                await doc.upload(doc.document_id.encode())
                await doc.convert()
                await doc.chunk([f"document {i} chunk {j} " + "lorem ipsum " * 40 for j in range(chunks)])
                await doc.embed(random_unit_vectors(rng, chunks, dims), "local:bench")
                docs.append(doc)
            await pool.execute("CREATE TABLE plain_chunks (LIKE chunks INCLUDING ALL)")
            await pool.execute("CREATE TABLE plain_vectors (LIKE vectors INCLUDING ALL)")
            # Baseline: COPY the rows replay writes to chunks and vectors, built from the same events.
            from projections.chunks import COLUMNS, chunk_records

            events = [
                e async for e in store.iter_all(0, 2000) if e.type in (domain.DOCUMENT_CHUNKED, domain.CHUNKS_EMBEDDED)
            ]
            start = time.perf_counter()
            async with pool.acquire() as conn:
                for e in events:
                    if e.type == domain.DOCUMENT_CHUNKED:
                        recs = chunk_records(e.data["document_id"], e.data)
                        await conn.copy_records_to_table("plain_chunks", records=recs, columns=COLUMNS)
                    else:
                        raw = await blobs.get_bytes(e.data["vectors"]["sha256"])
                        m = np.frombuffer(raw, "<f4").reshape(-1, dims)
                        ids = [domain.chunk_id_for(e.data["chunk_set_id"], o) for o in range(len(m))]
                        body = copy.encode_rows(len(m), [("uuid", ids), ("text", "local:bench"),
                                                         ("uuid", [ids[0]] * len(m)), ("vector", m)])  # fmt: skip
                        await conn.copy_to_table("plain_vectors", source=copy.stream([body]), format="binary")
            copy_s = time.perf_counter() - start
            stats = await replay(pool, dsn, progress=not quiet)
            log_events = stats.log_events
            total_chunks = documents * chunks
            t0 = time.perf_counter()
            await pool.execute(
                f"CREATE INDEX plain_hnsw ON plain_vectors USING hnsw "
                f"((embedding::vector({int(dims)})) vector_cosine_ops)"
            )
            hnsw_s = time.perf_counter() - t0
            return {
                "documents": documents,
                "chunks": total_chunks,
                "dimensions": dims,
                "log_events": log_events,
                "replay_s_all_projections": round(stats.seconds, 2),
                "replay_events_per_s_per_projection": round(stats.events_per_s),
                "replay_chunks_per_s": round(total_chunks / stats.seconds),
                "copy_s_chunks_and_vectors": round(copy_s, 2),
                "copy_chunks_per_s": round(total_chunks / copy_s),
                "ratio_replay_vs_copy": round(copy_s / stats.seconds, 3),
                "hnsw_build_s_baseline": round(hnsw_s, 2),
                "ratio_replay_vs_copy_plus_hnsw": round((copy_s + hnsw_s) / stats.seconds, 3),
                "note": "replay includes the HNSW build of its vectors table and all five projections",
            }
        finally:
            await pool.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay throughput vs COPY of the same rows")
    p.add_argument("--documents", type=int, default=1000)
    p.add_argument("--chunks", type=int, default=100, help="chunks per document")
    p.add_argument("--dimensions", type=int, default=384)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    result = await run_bench(args.documents, args.chunks, args.dimensions, args.json)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for k, v in result.items():
            print(f"{k:<40} {v}")
    return 0
