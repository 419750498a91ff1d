"""``chronos bench search``: HNSW latency (p50/p95) and recall@10 against exact search.

N vectors of D dimensions in the vectors table under one model, through the real projector path
only for the index (rows are COPYed straight in: the projector is measured by bench replay). Data:
a mixture of Gaussian clusters normalised to the unit sphere (embeddings cluster by topic; uniform
random vectors are the worst case for any ANN index and unlike real embeddings); queries are
perturbed data points. Exact top-10 comes from a sequential scan with the index disabled.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from app import config
from app.bench.scratch import scratch_database
from events.connection import create_pool
from projections import copy
from projections.index_memory import build_memory_mb

MODEL = "local:bench"


def clustered(rng: np.random.Generator, n: int, dims: int, clusters: int) -> np.ndarray:
    centres = rng.standard_normal((clusters, dims)).astype(np.float32)
    v = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def run_bench(
    n: int, dims: int, queries: int, ef_values: list[int], m: int, efc: int, quiet: bool, hybrid: bool = True,
    before_sql: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(0)
    data = clustered(rng, n, dims, max(16, n // 1000))
    async with scratch_database("chronos_bench_search") as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            ids = [uuid.uuid4() for _ in range(n)]
            from app.bench.search_hybrid import document_of, hnsw_scans

            docs = document_of(ids)  # documents of 100 chunks (filters select documents)
            async with pool.acquire() as conn:
                for start in tqdm(range(0, n, 20000), desc="load", disable=quiet):
                    part = data[start : start + 20000]
                    rows = slice(start, start + len(part))
                    body = copy.encode_rows(len(part), [("uuid", ids[rows]), ("text", MODEL), ("uuid", docs[rows]),
                                                        ("vector", part)])  # fmt: skip
                    await conn.copy_to_table(
                        "vectors",
                        source=copy.stream([body]),
                        format="binary",
                        columns=["chunk_id", "model", "document_id", "embedding"],
                    )
                await conn.execute("UPDATE settings SET value = $1 WHERE key = 'hnsw_m'", str(m))
                await conn.execute("UPDATE settings SET value = $1 WHERE key = 'hnsw_ef_construction'", str(efc))
                # The graph must fit in maintenance_work_mem or the build slows down many times over
                # (pgvector: "hnsw graph no longer fits"): the same sizing as replay's builds.
                work_mem_mb, _ = build_memory_mb(n, dims, m, config.current().index_build_memory_mb)
                await conn.execute(f"SET maintenance_work_mem = '{work_mem_mb}MB'")
                t0 = time.perf_counter()
                await conn.fetchval("SELECT ensure_vector_index($1, $2)", MODEL, dims)
                build_s = time.perf_counter() - t0
                build = await build_memory(conn, work_mem_mb)
                sql = (f"SELECT chunk_id FROM vectors WHERE model = '{MODEL}' "
                       f"ORDER BY embedding::vector({dims}) <=> $1::vector({dims}) LIMIT 10")  # fmt: skip
                picks = rng.integers(0, n, queries)
                qs = data[picks] + 0.05 * rng.standard_normal((queries, dims)).astype(np.float32)
                exact = []
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_indexscan = off")
                    for q in tqdm(qs, desc="exact", disable=quiet):
                        exact.append({r[0] for r in await conn.fetch(sql, q)})
                # Warm the index into the buffer cache once (unmeasured): the first pass otherwise reads
                # it from disk and its latency says more about the cache than about HNSW.
                await conn.execute(f"SET hnsw.ef_search = {int(max(ef_values))}")
                for q in tqdm(qs, desc="warm-up", disable=quiet):
                    await conn.fetch(sql, q)
                # asyncpg prepares the statement: after five executions PostgreSQL may plan it generically,
                # and a generic plan cannot use the partial expression index (an exact scan, recall 1.0).
                # Custom plans every time, and the index's own scan counter says what each query did.
                await conn.execute("SET plan_cache_mode = force_custom_plan")
                results = []
                for ef in ef_values:
                    await conn.execute(f"SET hnsw.ef_search = {int(ef)}")
                    times, recall, scans = [], [], 0
                    async with conn.transaction():  # the scan counters are per transaction
                        for q, truth in zip(qs, exact, strict=True):
                            before = await hnsw_scans(conn)
                            t = time.perf_counter()
                            got = {r[0] for r in await conn.fetch(sql, q)}
                            times.append((time.perf_counter() - t) * 1000)
                            scans += (await hnsw_scans(conn)) - before
                            recall.append(len(got & truth) / 10)
                    results.append({
                        "ef_search": ef, "p50_ms": round(float(np.percentile(times, 50)), 2),
                        "p95_ms": round(float(np.percentile(times, 95)), 2),
                        "recall_at_10": round(float(np.mean(recall)), 4), "uses_hnsw": scans == len(qs),
                        "hnsw_scans": scans,
                    })  # fmt: skip
                hybrid_figures: dict[str, Any] | None = None
                if hybrid:
                    from app.bench.search_hybrid import hybrid_runs, load_rows

                    texts = await load_rows(conn, ids, MODEL, dims)
                    hybrid_figures = await hybrid_runs(conn, ids, texts, data, picks, qs, MODEL, 40)
                    if before_sql:  # the same runs through an earlier search_chunks_hybrid, same data
                        await conn.execute(before_sql)
                        earlier = await hybrid_runs(conn, ids, texts, data, picks, qs, MODEL, 40,
                                                   "search_chunks_hybrid_before")  # fmt: skip
                        hybrid_figures |= {f"before_{k}": v for k, v in earlier.items()}
            return {"vectors": n, "dimensions": dims, "queries": queries, "m": m, "ef_construction": efc,
                    "index_build_s": round(build_s, 1), "index_build": build, "runs": results,
                    "hybrid": hybrid_figures}  # fmt: skip
        finally:
            await pool.close()


async def build_memory(conn: Any, work_mem_mb: int) -> dict[str, Any]:
    """Sizes of the table and the index, and the peak memory of the server process that built it
    (VmHWM, readable when the server runs on this machine as here; parallel build workers not counted)."""
    row = await conn.fetchrow(
        "SELECT pg_backend_pid() AS pid, pg_total_relation_size('vectors') AS total, "
        "(SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index i "
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'vectors'::regclass AND c.relname LIKE '%hnsw%') "
        "AS hnsw"
    )
    peak = _peak_rss_mb(int(row["pid"]))
    return {"maintenance_work_mem_mb": work_mem_mb, "hnsw_index_mb": round(float(row["hnsw"]) / 2**20, 1),
            "vectors_table_total_mb": round(float(row["total"]) / 2**20, 1), "backend_peak_rss_mb": peak}  # fmt: skip


def _peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass  # another machine's server
    return None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("search", help="HNSW latency and recall@10 vs exact search")
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--dimensions", type=int, default=384)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--no-hybrid", action="store_true", help="skip search_chunks_hybrid latency and filtered recall")
    p.add_argument("--before", metavar="GIT_REV",
                   help="also run the hybrid figures through search_chunks_hybrid as it was at this revision "
                        "(sql/views/012_search_hybrid.sql from git), same data, same run")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def before_function(rev: str) -> str:
    """search_chunks_hybrid (and its snippet helper) at ``rev``, renamed ``search_chunks_hybrid_before``."""
    import subprocess

    sql = subprocess.run(["git", "show", f"{rev}:sql/views/012_search_hybrid.sql"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return (
        sql.replace("search_chunks_hybrid(", "search_chunks_hybrid_before(")
        .replace("search_chunks_hybrid.", "search_chunks_hybrid_before.")
        .replace("chronos_snippet(", "chronos_snippet_before(")
        .replace("chronos_or_tsquery(", "chronos_or_tsquery_before(")
    )


async def main(args: argparse.Namespace) -> int:
    r = await run_bench(
        args.vectors,
        args.dimensions,
        args.queries,
        args.ef_search,
        args.m,
        args.ef_construction,
        args.json,
        not args.no_hybrid,
        before_function(args.before) if args.before else None,
    )
    if args.json:
        print(orjson.dumps(r).decode())
        return 0
    print(f"{r['vectors']} vectors x {r['dimensions']} dims, m={r['m']} ef_construction={r['ef_construction']}, "
          f"index build {r['index_build_s']}s, {r['queries']} queries")  # fmt: skip
    b = r["index_build"]
    print(f"  index {b['hnsw_index_mb']} MB (table with indexes {b['vectors_table_total_mb']} MB), "
          f"maintenance_work_mem {b['maintenance_work_mem_mb']} MB, building backend peak RSS "
          f"{b['backend_peak_rss_mb']} MB")  # fmt: skip
    for run in r["runs"]:
        print(f"  ef_search={run['ef_search']:<4} p50 {run['p50_ms']} ms  p95 {run['p95_ms']} ms  "
              f"recall@10 {run['recall_at_10']}  hnsw={run['uses_hnsw']}")  # fmt: skip
    for name, fig in (r["hybrid"] or {}).items():
        extra = f"  recall@10 {fig['recall_at_10']}" if "recall_at_10" in fig else ""
        print(f"  search_chunks_hybrid {name:<22} p50 {fig['p50_ms']} ms  p95 {fig['p95_ms']} ms{extra}")
    return 0
