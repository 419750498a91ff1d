"""``chronos bench replay``: replay throughput on a synthetic log vs a plain COPY of the same rows.

The log: D documents × C chunks (random unit vectors, no model calls), each with the events the
stages append. Replay rebuilds every projection into shadow tables and swaps them in; the baseline
COPYs the same chunk and vector rows into plain tables of the same shape (same columns and keys)
in the same run, then builds the same HNSW index (same m / ef_construction, same session settings).
Ratios are printed both without the index builds (load speed) and with them (time to a searchable
table); the per-projection phases show where replay spends its time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from app import config
from app.bench.scratch import scratch_database
from app.catalogue import events as ev
from app.catalogue.codec import decode
from app.catalogue.content import load_content
from app.catalogue.ids import chunk_id_for
from events.blobs import PgBlobStore
from events.connection import create_pool
from events.sqlfiles import query
from events.store import EventStore
from projections import copy
from projections.index_memory import build_memory_mb
from projections.replay import replay
from projections.synthetic import SyntheticDocument, random_unit_vectors


async def run_bench(documents: int, chunks: int, dims: int, quiet: bool, baseline_index: bool = True) -> dict[str, Any]:
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
            await pool.execute(query("bench", "plain_index_tables"))
            # Baseline: COPY the rows replay writes to chunk_rows and vectors, built from the same events
            # (chunk texts read from their content blobs, as replay reads them).
            from projections.index import CHUNK_COLUMNS, SetRows, chunk_records

            wanted = (ev.DocumentChunked.TYPE, ev.ChunksEmbedded.TYPE)
            events = [decode(e) async for e in store.iter_all(0, 2000) if e.type in wanted]
            start = time.perf_counter()
            async with pool.acquire() as conn:
                for e in events:
                    if isinstance(e, ev.DocumentChunked):
                        rows = SetRows.of(e, 0)
                        content = await load_content(blobs, e)
                        recs = chunk_records(rows, content, 0)
                        await conn.copy_records_to_table("plain_chunks", records=recs, columns=CHUNK_COLUMNS)
                    elif isinstance(e, ev.ChunksEmbedded):
                        raw = await blobs.get_bytes(e.vectors.sha256)
                        m = np.frombuffer(raw, "<f4").reshape(-1, dims)
                        ids = [chunk_id_for(e.chunk_set_id, o) for o in range(len(m))]
                        body = copy.encode_rows(len(m), [("uuid", ids), ("text", "local:bench"),
                                                         ("uuid", [ids[0]] * len(m)), ("vector", m),
                                                         ("int8", 0)])  # fmt: skip
                        await conn.copy_to_table("plain_vectors", source=copy.stream([body]), format="binary")
            copy_s = time.perf_counter() - start
            total_chunks = documents * chunks
            stats = await replay(
                pool, dsn, progress=not quiet, build_memory_cap_mb=config.current().index_build_memory_mb
            )
            log_events = stats.log_events
            # The same index replay builds: same parameters, same session settings.
            hnsw_s: float | None = None
            async with pool.acquire() as conn:
                hp = await conn.fetchrow(query("projections", "hnsw_parameters"))
                assert hp is not None
            work_mem_mb, graph_need_mb = build_memory_mb(
                total_chunks, dims, hp["m"], config.current().index_build_memory_mb
            )
            if baseline_index:
                t0 = time.perf_counter()
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(query("projections", "bulk_index_settings"), work_mem_mb)
                    await conn.execute(
                        f"CREATE INDEX plain_hnsw ON plain_vectors USING hnsw "
                        f"((embedding::vector({int(dims)})) vector_cosine_ops) "
                        f"WITH (m = {int(hp['m'])}, ef_construction = {int(hp['ef_construction'])})"
                    )
                hnsw_s = time.perf_counter() - t0
            index_s = sum(v for k, v in stats.phases.items() if k.endswith(":index"))
            load_s = stats.seconds - index_s
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
                "replay_s_without_index_builds": round(load_s, 2),
                "ratio_replay_vs_copy_both_without_index": round(copy_s / load_s, 3),
                "hnsw_build_s_replay": round(index_s, 2),
                "hnsw_build_s_baseline": None if hnsw_s is None else round(hnsw_s, 2),
                "ratio_replay_vs_copy_both_with_hnsw": None
                if hnsw_s is None
                else round((copy_s + hnsw_s) / stats.seconds, 3),
                "hnsw_m_ef_construction": [hp["m"], hp["ef_construction"]],
                "maintenance_work_mem_mb": work_mem_mb,
                "hnsw_graph_estimate_mb": graph_need_mb,
                "replay_phases_s": {k: round(v, 2) for k, v in stats.phases.items()},
                "note": "replay covers all five projections; the baseline COPYs chunks and vectors only",
            }
        finally:
            await pool.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="replay throughput vs COPY of the same rows")
    p.add_argument("--documents", type=int, default=1000)
    p.add_argument("--chunks", type=int, default=100, help="chunks per document")
    p.add_argument("--dimensions", type=int, default=384)
    p.add_argument(
        "--no-baseline-index",
        dest="baseline_index",
        action="store_false",
        help="skip the baseline's HNSW build (the same CREATE INDEX replay runs; at 1M it takes as long again)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    result = await run_bench(args.documents, args.chunks, args.dimensions, args.json, args.baseline_index)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for k, v in result.items():
            print(f"{k:<40} {v}")
    return 0
