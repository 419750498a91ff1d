"""The Chronos side of ``chronos bench compare``: the real pipeline, upload -> searchable, in-process.

The same code ``chronos ingest --wait`` runs (``collect``, ``upload_all``, ``wait_until_final``):
bytes into the blob store, ``DocumentUploaded``, stage workers converting (local Docling in warm
child processes), chunking and embedding, every result and cost appended to the log, projections
caught up. The clock stops when every document is final *and* the projections (``chunks``,
``vectors``, ``cost_ledger``) have caught up, so "searchable" means rows a search can read.

Run as a separate process by the harness (``python -m app.bench.chronos_side``) against a fresh
scratch database (no dedupe hits). The converter process and the embedding model are started
before the clock (the LlamaIndex side loads its models before its clock too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import orjson

from app import malloc
from app.catalogue.ids import document_id_from_stream, stream_for
from app.commands.ingest import Item, upload_all, wait_until_final
from app.config import Settings
from app.convert import local as convert_local
from app.pipeline.backend import backend_services
from app.pipeline.warmup import warm_up
from app.pipeline.worker import Worker
from app.runtime import Runtime, open_runtime
from app.supervisor import Supervisor
from events.sqlfiles import query
from projections.runner import catch_up_to_head

logger = logging.getLogger(__name__)


async def per_document(rt: Runtime, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Chunks and vectors per document, from the projections when they exist, else from the log."""
    out: dict[str, dict[str, Any]] = {}
    for row in await rt.pool.fetch(query("bench", "log_per_document"), [stream_for(d) for d in ids]):
        doc = document_id_from_stream(row["stream_id"]) or row["stream_id"]
        out[doc] = {
            "log_chunks": row["chunks"],
            "log_vectors": row["vectors"],
            "events": row["events"],
            "cost_events": row["cost_events"],
        }
    with contextlib.suppress(Exception):  # projections not built in this checkout: the log figures stand
        for row in await rt.pool.fetch(query("bench", "tables_per_document"), ids):
            out.setdefault(str(row["document_id"]), {}).update(
                {
                    "chunks": row["chunks"],
                    "vectors": row["vectors"],
                    "cost_lines": row["cost_lines"],
                    "status": row["status"],
                }
            )
    return out


async def run(files: list[Path], dsn: str, *, concurrency: int, quiet: bool, timeout: float | None) -> dict[str, Any]:
    settings = replace(Settings.from_env(), database_url=dsn)
    warm_start = time.perf_counter()
    warm = await warm_up(("convert", "chunk", "embed"), settings)
    warm_s = time.perf_counter() - warm_start
    async with open_runtime(settings, max_size=max(10, concurrency * 3 + 6)) as rt:
        started = time.perf_counter()
        started_at = time.monotonic()  # the compare's busy sampler's clock
        cpu_started = time.process_time()
        results, rejected = await upload_all(rt, [Item(p, None) for p in files], force=False, quiet=quiet)
        upload_s = time.perf_counter() - started
        ids = list(dict.fromkeys(r.document_id for r in results))
        stop = asyncio.Event()
        worker = Worker(rt, concurrency=concurrency, grace_s=10.0)
        task = asyncio.create_task(Supervisor(backend_services(rt, worker)).run(stop))
        try:
            state = await wait_until_final(rt, ids, quiet, timeout)
            final_s = time.perf_counter() - started
            projected = False
            await catch_up_to_head(rt.pool, timeout=600)
            projected = True
            total_s = time.perf_counter() - started
            timed_window = [started_at, time.monotonic()]
            cpu_s = time.process_time() - cpu_started
        finally:
            stop.set()
            await task
        docs = await per_document(rt, ids)
        totals = await rt.pool.fetchrow(query("bench", "log_totals"))
        assert totals is not None
    searchable = [d for d, p in state.items() if p.status == "searchable"]
    failed = {d: p.failure for d, p in state.items() if p.status == "failed"}
    names = {r.document_id: r.filename for r in results}
    chunk_key = "chunks" if projected else "log_chunks"
    chunks = sum(int(docs.get(d, {}).get(chunk_key, 0)) for d in searchable)
    return {
        "side": "chronos",
        "documents": len(files),
        "searchable": len(searchable),
        "failed": len(failed) + len(rejected),
        "not_final": len(ids) - len(searchable) - len(failed),
        "failures": [{"filename": names[d], "reason": r} for d, r in failed.items()]
        + [{"filename": r["filename"], "reason": r["reason"]} for r in rejected],
        "chunks": chunks,
        "per_document": {names[d]: v for d, v in docs.items() if d in names},
        "projections": projected,
        "events": totals["events"],
        "cost_events": totals["cost_events"],
        "seconds": round(total_s, 3),
        "stage_seconds": {
            "upload": round(upload_s, 3),
            "until_final": round(final_s - upload_s, 3),
            "projection_catch_up": round(total_s - final_s, 3),
        },
        "timed_window": timed_window,  # time.monotonic() at the timed phase's start and end (app/bench/busy.py)
        "warm_up_s": round(warm_s, 3),
        "worker_process_cpu_s": round(cpu_s, 3),  # this process, every thread; converter children not included
        "warm_up": warm,
        "settings": {
            "concurrency": concurrency,
            "convert_processes": os.environ.get("CHRONOS_CONVERT_PROCESSES", "default"),
            "malloc_tuning": os.environ.get("CHRONOS_MALLOC_TUNING", "on"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    malloc.tune()  # as the chronos command does
    p = argparse.ArgumentParser(prog="python -m app.bench.chronos_side")
    p.add_argument("--dsn", required=True, help="a migrated, empty Chronos database")
    p.add_argument("--files-from", type=Path, required=True, help="JSON list of file paths")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    files = [Path(f) for f in orjson.loads(args.files_from.read_bytes())]
    result = asyncio.run(run(files, args.dsn, concurrency=args.concurrency, quiet=args.quiet, timeout=args.timeout))
    # Reap the fork server (and with it the converter processes it reaped): an orphan's CPU-seconds
    # would be missing from the compare's getrusage(RUSAGE_CHILDREN) of this side (~20 CPU-s).
    result["fork_server_reaped"] = convert_local.shutdown()
    args.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
