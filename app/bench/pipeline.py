"""``chronos bench pipeline``: the headroom of the machinery itself, with conversion and embedding
replaced by INSTANT STAND-INS.

Everything else is the real thing: uploads through ``ingest_stream`` (blob store, ``DocumentUploaded``),
the dispatcher subscription, the jobs table with leases and ``FOR UPDATE SKIP LOCKED`` claims, the
NOTIFY wake-ups through each process's hub, the real chunk stage (LlamaIndex over Docling JSON), the
embedding cache, every result and ``CostIncurred`` event, and the projections (documents, chunks,
vectors with their HNSW index, cost ledger). Only two functions are swapped, in the worker processes:

* conversion: ``app.convert.convert_with_recovery`` returns at once a DoclingDocument built from the
  uploaded Markdown (a heading and its paragraphs), no Docling converter process;
* embedding: the local model is replaced by a hash-seeded random unit vector per text (384 dimensions,
  the local model's name, so the same index and projections are used), no torch.

For 1, 2 and 4 worker processes (``chronos worker``'s composition: Worker + dispatcher + projections,
``--slots`` each) on one fresh database of an embedded server of its own (a temporary
``CHRONOS_HOME``), the parent uploads ``--documents`` distinct small Markdown documents with
``--uploaders`` concurrent uploads and watches ``documents`` until each is searchable. Reported:
documents/s from the first upload to the last searchable, events/s and jobs/s over that window,
p50/p99 of upload -> searchable, CPU of each process kind (psutil, % of one core over the window), and
what the database's active sessions waited on (``pg_stat_activity`` wait events, sampled every 0.2 s;
``Lock`` rows are lock waits).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson

from events.sqlfiles import query

XACTS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
FINAL_DOCUMENTS = "SELECT document_id::text AS d FROM documents WHERE status IN ('searchable', 'failed')"
BANNER = (
    "*** STAND-INS: conversion and embedding are replaced by instant stand-ins in this benchmark; "
    "the figures measure Chronos's machinery (events, jobs, leases, NOTIFY, chunking, projections), "
    "not Docling or the model ***"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pipeline", help="the machinery's headroom: instant convert/embed stand-ins, 1/2/4 workers")
    p.add_argument("--documents", type=int, default=400, help="documents per run (default 400)")
    p.add_argument("--processes", default="1,2,4", help="worker process counts to run (default 1,2,4)")
    p.add_argument("--slots", type=int, default=2, help="job slots per worker process (default 2)")
    p.add_argument("--uploaders", type=int, default=4, help="concurrent uploads from the bench process (default 4)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait per run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


# --- the stand-ins (installed in the worker processes) -------------------------------------------------


class InstantEmbedder:
    """The local model's name and size, vectors from a hash of the text: no inference."""

    provider = "local"
    max_tokens = 256

    def __init__(self, model: str, dimensions: int) -> None:
        self.model = model
        self.dimensions = dimensions

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [max(1, len(t.split())) for t in texts]

    def tokenizer_name(self) -> str:
        return "whitespace (bench stand-in)"

    async def embed(self, texts: Sequence[str]) -> Any:
        from app.costs import local_cpu
        from app.embedders.base import EmbedResult

        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dimensions).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        vectors = np.stack(rows) if rows else np.zeros((0, self.dimensions), dtype=np.float32)
        return EmbedResult(vectors, sum(self.count_tokens(texts)), 1e-6, [local_cpu(1e-6)])


async def instant_convert(path: Path, *, filename: str, media_type: str, options: Any, **_: Any) -> Any:
    """A DoclingDocument of the uploaded Markdown (``# title`` then paragraphs), made at once."""
    from docling_core.types.doc import DocItemLabel, DoclingDocument

    from app.convert.options import ConversionOutput

    text = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
    doc = DoclingDocument(name=filename)
    for block in (b.strip() for b in text.split("\n\n")):
        if block.startswith("#"):
            doc.add_heading(text=block.lstrip("#").strip(), level=1)
        elif block:
            doc.add_text(label=DocItemLabel.PARAGRAPH, text=block)
    return ConversionOutput(
        docling_json=orjson.dumps(doc.export_to_dict()), markdown=doc.export_to_markdown(), page_count=0,
        backend="local", pipeline="simple", docling_version="bench-stand-in", convert_s=0.0, total_s=0.0,
        cpu_s=1e-6, gpu_s=0.0, gpu=None, media_type=media_type,
    )  # fmt: skip


def install_stand_ins() -> None:
    import app.convert
    import app.embedders

    app.convert.convert_with_recovery = instant_convert
    app.embedders._build = lambda spec, settings: InstantEmbedder(f"local:{spec.name}", spec.dimensions)


async def child(slots: int) -> int:
    """One worker process (``chronos worker``'s composition) with the stand-ins, until SIGTERM."""
    from app.pipeline.backend import backend_services
    from app.pipeline.worker import Worker
    from app.runtime import open_runtime
    from app.supervisor import Supervisor

    install_stand_ins()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(max_size=slots * 3 + 6) as rt:
        worker = Worker(rt, concurrency=slots, poll_interval=1.0)
        await Supervisor(backend_services(rt, worker, warm=False)).run(stop)
    return 0


# --- the measuring side -------------------------------------------------------------------------------


def documents(n: int, seed: int) -> list[tuple[str, bytes]]:
    from app.bench.docgen import paragraph, sentence

    rng = random.Random(seed)
    out = []
    for i in range(n):
        parts = [f"# Pipeline bench {seed}-{i}: {sentence(rng, 4)[:-1]}"]
        parts += [paragraph(rng, rng.randint(2, 4)) for _ in range(rng.randint(2, 5))]
        out.append((f"doc-{seed}-{i:05d}.md", "\n\n".join(parts).encode()))
    return out


class Sampler:
    """CPU seconds per process kind and the database's wait events, sampled every 0.2 s."""

    def __init__(self, pool: asyncpg.Pool, database: str, workers: list[int], postmaster: int | None) -> None:
        self.pool = pool
        self.database = database
        self.workers = workers
        self.postmaster = postmaster
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self.active = 0

    def cpu(self) -> dict[str, float]:
        import psutil

        def seconds(p: psutil.Process) -> float:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                return float(t.user + t.system)
            return 0.0

        out = {"bench process (uploads, watching)": seconds(psutil.Process())}
        out["worker processes"] = sum(seconds(psutil.Process(pid)) for pid in self.workers)
        postgres = 0.0
        if self.postmaster is not None:
            with contextlib.suppress(psutil.Error):
                server = psutil.Process(self.postmaster)
                postgres = seconds(server) + sum(seconds(c) for c in server.children(recursive=True))
        out["postgresql server"] = postgres
        return out

    async def run(self, stop: asyncio.Event) -> None:
        sql = (
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait event)') AS w FROM pg_stat_activity "
            "WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()"
        )
        while not stop.is_set():
            rows = await self.pool.fetch(sql, self.database)
            self.samples += 1
            self.active += len(rows)
            self.waits.update(r["w"] for r in rows)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


def postmaster_pid(home: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    return None


async def upload_and_watch(
    dsn: str, docs: list[tuple[str, bytes]], uploaders: int, timeout: float
) -> tuple[dict[str, float], dict[str, float], float]:
    """Upload ``docs`` (``uploaders`` at a time); returns upload-done and searchable times per document."""
    from app.services.upload import ingest_stream
    from events import EventStore, PgBlobStore
    from events.blobs import aiter_bytes
    from events.connection import create_pool

    pool = await create_pool(dsn, min_size=2, max_size=uploaders + 2)
    try:
        store, blobs = EventStore(pool), PgBlobStore(pool)
        uploaded: dict[str, float] = {}
        final: dict[str, float] = {}
        gate = asyncio.Semaphore(uploaders)
        t0 = time.perf_counter()

        async def one(name: str, body: bytes) -> None:
            async with gate:
                r = await ingest_stream(store, blobs, aiter_bytes(body), filename=name, source="cli", actor="bench")
                uploaded[r.document_id] = time.perf_counter()

        uploads = asyncio.ensure_future(asyncio.gather(*(one(n, b) for n, b in docs)))
        while time.perf_counter() - t0 < timeout:
            rows = await pool.fetch(FINAL_DOCUMENTS)
            now = time.perf_counter()
            for r in rows:
                if r["d"] in uploaded:
                    final.setdefault(r["d"], now)
            if uploads.done() and len(final) >= len(uploaded):
                break
            await asyncio.sleep(0.05)
        await uploads
        return uploaded, final, t0
    finally:
        await pool.close()


async def one_run(dsn: str, home: Path, processes: int, args: argparse.Namespace, quiet: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()} | {"DATABASE_URL": dsn, "CHRONOS_HOME": str(home)}
    cmd = [sys.executable, "-m", "app.bench.pipeline", "--child", str(args.slots)]
    procs = [await asyncio.to_thread(subprocess.Popen, cmd, env=env) for _ in range(processes)]
    admin = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        # Warm-up (not timed): every process has imported the chunker and touched every stage.
        await upload_and_watch(dsn, documents(4 * processes, seed=1000 + processes), args.uploaders, args.timeout)
        head = await admin.fetchval("SELECT coalesce(max(position), 0) FROM events")
        jobs_before = await admin.fetchval("SELECT count(*) FROM jobs WHERE status = 'done'")
        database = await admin.fetchval("SELECT current_database()")
        xacts_before = await admin.fetchval(XACTS)
        sampler = Sampler(admin, database, [p.pid for p in procs], postmaster_pid(home))
        cpu0 = sampler.cpu()
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        docs = documents(args.documents, seed=processes)
        uploaded, final, t0 = await upload_and_watch(dsn, docs, args.uploaders, args.timeout)
        stop.set()
        await sampling
        wall = max(final.values()) - t0 if final else float("nan")
        cpu1 = sampler.cpu()
        events = await admin.fetchval("SELECT count(*) FROM events WHERE position > $1", head)
        jobs_done = await admin.fetchval("SELECT count(*) FROM jobs WHERE status = 'done'") - jobs_before
        rows = await admin.fetch(
            "SELECT status, count(*) AS n FROM documents WHERE document_id = ANY($1::uuid[]) GROUP BY 1", list(uploaded)
        )
        statuses = {r["status"]: r["n"] for r in rows}
        failures = await admin.fetch(
            "SELECT last_error, count(*) AS n FROM documents WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
        )
        latencies = sorted(final[d] - uploaded[d] for d in uploaded if d in final)
        cpu = {k: (cpu1[k] - cpu0[k]) / wall * 100 for k in cpu1}
        waits = {k: round(v / max(1, sampler.samples), 2) for k, v in sampler.waits.most_common(8)}
        gaps = await admin.fetchrow(query("bench", "pipeline_stage_gaps"), head)
        await asyncio.sleep(1.0)  # the statistics collector flushes about once a second
        xacts = await admin.fetchval(XACTS) - xacts_before
        result = {
            "worker_processes": processes,
            "slots_per_process": args.slots,
            "documents": len(docs),
            "final": len(final),
            "statuses": statuses,
            "failures": {r["last_error"]: r["n"] for r in failures},
            "seconds": wall,
            "documents_per_s": len(final) / wall,
            "events_per_s": events / wall,
            "jobs_per_s": jobs_done / wall,
            "events": events,
            "jobs_done": jobs_done,
            "latency_p50_s": statistics.median(latencies) if latencies else None,
            "latency_p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
            "cpu_percent_of_a_core": cpu,
            "median_gap_s": dict(gaps) if gaps else {},
            "transactions_per_document": xacts / max(1, len(docs)),
            "active_sessions_avg": sampler.active / max(1, sampler.samples),
            "wait_events_avg_sessions": waits,
        }
        if not quiet:
            print(
                f"{processes} process(es): {result['documents_per_s']:.1f} documents/s, "
                f"{result['events_per_s']:.0f} events/s, {result['jobs_per_s']:.0f} jobs/s, "
                f"p50 {result['latency_p50_s']:.2f}s p99 {result['latency_p99_s']:.2f}s"
            )
        return result
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await admin.close()


async def main(args: argparse.Namespace) -> int:
    from app.bench.scratch import scratch_database

    quiet = args.json
    counts = [int(c) for c in args.processes.split(",") if c.strip()]
    if not counts or min(counts) < 1:
        print("--processes: a comma-separated list of positive counts", file=sys.stderr)
        return 2
    print(BANNER, file=sys.stderr if args.json else sys.stdout, flush=True)
    own_home = "DATABASE_URL" not in os.environ
    home = Path(tempfile.mkdtemp(prefix="chronos-bench-pipeline-")) if own_home else Path(os.environ["CHRONOS_HOME"])
    previous = os.environ.get("CHRONOS_HOME")
    os.environ["CHRONOS_HOME"] = str(home)
    load_before = os.getloadavg()
    runs = []
    try:
        for n in counts:
            async with scratch_database(f"chronos_bench_pipeline_{n}") as dsn:
                runs.append(await one_run(dsn, home, n, args, quiet))
    finally:
        if own_home:
            stop_server = [sys.executable, "-m", "app.cli", "db", "stop"]
            await asyncio.to_thread(subprocess.run, stop_server, env={**os.environ}, capture_output=True, check=False)
            shutil.rmtree(home, ignore_errors=True)
        if previous is None:
            os.environ.pop("CHRONOS_HOME", None)
        else:
            os.environ["CHRONOS_HOME"] = previous
    cores = os.cpu_count() or 1
    result = {
        "stand_ins": BANNER,
        "cores": cores,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "runs": runs,
    }
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    print(f"\n{'procs':>5} {'docs/s':>8} {'events/s':>9} {'jobs/s':>7} {'p50 s':>6} {'p99 s':>6}  CPU % of a core")
    for r in runs:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_percent_of_a_core"].items())
        print(
            f"{r['worker_processes']:>5} {r['documents_per_s']:>8.1f} {r['events_per_s']:>9.0f} "
            f"{r['jobs_per_s']:>7.0f} "
            f"{r['latency_p50_s']:>6.2f} {r['latency_p99_s']:>6.2f}  {cpu}"
        )
        print(f"      waits (avg active sessions): {r['wait_events_avg_sessions']}")
    print(f"{cores} cores; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(BANNER)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(asyncio.run(child(int(sys.argv[2]))))
    print("run it as `chronos bench pipeline`", file=sys.stderr)
    sys.exit(2)
