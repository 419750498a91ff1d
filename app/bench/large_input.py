"""``chronos bench large``: a generated 500-page PDF and a ~200 MB upload through the real pipeline,
with the peak memory of each process measured.

Everything runs as separate processes against a fresh scratch database on the configured server:

* the upload: ``chronos ingest FILE --json`` (streams the file into the blob store with
  ``ingest_stream``; the HTTP API is measured the same way once ``chronos serve`` exists);
* the back end: one ``chronos worker`` (dispatcher, stages, projections) whose process tree --
  the worker and its forked Docling converter processes -- is sampled while each file is processed.

Files are processed one after the other so each peak belongs to one file. A file that cannot be
converted within the limits must end in a failure event with a clear reason while memory stays
bounded (the converter process is capped; see ``app/convert/local.py``); that is reported, not hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from tqdm import tqdm

from app.bench import docgen
from app.bench.memory import TreeSampler
from app.bench.scratch import scratch_database
from app.catalogue.ids import stream_for
from app.catalogue.state import DocumentState
from app.services.documents import Watch
from events.connection import create_pool
from events.sqlfiles import query

KINDS = ("pdf", "md")


def generate(folder: Path, pages: int, big_mb: int, big_kind: str, quiet: bool) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    if pages > 0:
        with tqdm(total=pages, desc=f"generate {pages}-page PDF", unit="page", disable=quiet) as bar:
            long_pdf = docgen.make_long_pdf(folder / f"long-{pages}-pages.pdf", pages, progress=bar.update)
            files.append(("long_pdf", long_pdf))
    if big_mb > 0:
        make: Callable[..., Path] = docgen.make_heavy_pdf if big_kind == "pdf" else docgen.make_markdown
        with tqdm(total=big_mb, desc=f"generate {big_mb} MB {big_kind}", unit="MB", disable=quiet) as bar:
            files.append((f"big_{big_kind}", make(folder / f"big-{big_mb}mb.{big_kind}", big_mb, progress=bar.update)))
    return files


async def _cli(env: dict[str, str], *argv: str) -> tuple[int, bytes, bytes, dict[str, object], float]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    with TreeSampler(proc.pid, interval=0.05) as sampler:
        out, err = await proc.communicate()
    return proc.returncode or 0, out, err, sampler.result.as_dict(), time.perf_counter() - started


async def wait_final(pool: asyncpg.Pool, document_id: str, timeout: float, bar: tqdm) -> DocumentState | None:
    deadline = time.monotonic() + timeout
    state: DocumentState | None = None
    watch = Watch.of([document_id])
    while time.monotonic() < deadline:
        state = (await watch.refresh(pool)).get(document_id)
        if state is not None:
            bar.set_postfix_str(str(state.status), refresh=True)
            if state.final:
                return state
        await asyncio.sleep(0.5)
    return state


async def _events(pool: asyncpg.Pool, document_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(query("bench", "stream_events"), stream_for(document_id))
    return [{"type": r["type"], "data": r["data"]} for r in rows]


def _summarise_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"events": [e["type"] for e in events]}
    for e in events:
        data = e["data"] if isinstance(e["data"], dict) else orjson.loads(e["data"])
        if e["type"] == "DocumentConverted":
            out["page_count"] = data.get("page_count")
            out["convert_s"] = (data.get("durations") or {}).get("convert_s")
            out["slices"] = data.get("slices")
        elif e["type"] == "DocumentChunked":
            out["chunks"] = len(data.get("chunks") or [])
        elif e["type"].endswith("Failed"):
            out.setdefault("failures", []).append(f"{data.get('error_class')}: {data.get('message')}")
    return out


async def run_large(
    pages: int, big_mb: int, big_kind: str, *, concurrency: int, timeout: float, quiet: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"files": []}
    with tempfile.TemporaryDirectory(prefix="chronos-large-") as tmp:
        files = generate(Path(tmp), pages, big_mb, big_kind, quiet)
        async with scratch_database("chronos_large") as dsn:
            env = {**os.environ, "DATABASE_URL": dsn, "HF_HUB_OFFLINE": "1"}
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.cli",
                "worker",
                "--concurrency",
                str(concurrency),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            pool = await create_pool(dsn, min_size=1, max_size=2)
            try:
                for label, path in files:
                    result["files"].append(await _one(label, path, env, pool, worker.pid, timeout, quiet))
            finally:
                await pool.close()
                worker.send_signal(signal.SIGTERM)
                try:
                    _o, err = await asyncio.wait_for(worker.communicate(), 60)
                except TimeoutError:
                    worker.kill()
                    _o, err = await worker.communicate()
                result["worker_exit"] = worker.returncode
                result["worker_log_tail"] = (err or b"").decode("utf-8", "replace")[-1500:]
    return result


async def _one(
    label: str, path: Path, env: dict[str, str], pool: asyncpg.Pool, worker_pid: int, timeout: float, quiet: bool
) -> dict[str, Any]:
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    row: dict[str, Any] = {"file": label, "filename": path.name, "size_mb": round(size / 2**20, 1)}
    with TreeSampler(worker_pid, interval=0.1) as workers:
        code, out, err, upload_mem, upload_s = await _cli(env, "ingest", str(path), "--json")
        row["upload"] = {"seconds": round(upload_s, 2), "exit": code, "memory": upload_mem}
        if code != 0:
            row["status"] = "upload failed"
            row["reason"] = err.decode("utf-8", "replace")[-500:]
            return row
        uploaded = orjson.loads(out)[0]
        document_id = uploaded["document_id"]
        started = time.perf_counter()
        with tqdm(total=1, desc=f"{label} ({row['size_mb']} MB)", unit="doc", disable=quiet) as bar:
            state = await wait_final(pool, document_id, timeout, bar)
            bar.update(1)
        row["seconds_to_final"] = round(time.perf_counter() - started, 2)
    row["document_id"] = document_id
    row["status"] = state.status if state else "not started"
    row["reason"] = state.failure if state else None
    row["workers"] = {"memory": workers.result.as_dict()}
    row.update(_summarise_events(await _events(pool, document_id)))
    return row


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("large", help="a generated 500-page PDF and a ~200 MB upload: peak memory per process")
    p.add_argument("--pages", type=int, default=500, help="pages of the generated text PDF (0: skip)")
    p.add_argument("--big-mb", type=int, default=200, help="size of the big upload in MB (0: skip)")
    p.add_argument("--big-kind", choices=KINDS, default="pdf", help="big upload: PDF with large images, or Markdown")
    p.add_argument("--concurrency", type=int, default=2, help="worker slots")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for each document to be final")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    result = await run_large(
        args.pages, args.big_mb, args.big_kind, concurrency=args.concurrency, timeout=args.timeout, quiet=args.json
    )
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print_report(result)
    finals = {"searchable", "failed"}
    return 0 if all(f.get("status") in finals for f in result["files"]) else 1


def print_report(result: dict[str, Any]) -> None:
    header = [
        "file",
        "MB",
        "pages",
        "status",
        "upload s",
        "upload RSS MB",
        "convert s",
        "to final s",
        "chunks",
        "workers RSS MB",
        "workers PSS MB",
        "converter RSS MB",
    ]
    rows = [header]
    for f in result["files"]:
        wm = f.get("workers", {}).get("memory", {})
        conv = wm.get("largest_child_rss_mb", "-")
        rows.append(
            [
                f["file"],
                str(f["size_mb"]),
                str(f.get("page_count", "-")),
                f["status"],
                str(f["upload"]["seconds"]),
                str(f["upload"]["memory"]["peak_rss_mb"]),
                str(f.get("convert_s", "-")),
                str(f.get("seconds_to_final", "-")),
                str(f.get("chunks", "-")),
                str(wm.get("peak_rss_mb", "-")),
                str(wm.get("peak_pss_mb", "-")),
                str(conv),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[j]) if j in (0, 3) else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for f in result["files"]:
        reasons = f.get("failures", [])
        for reason in dict.fromkeys(reasons):
            times = reasons.count(reason)
            print(f"  {f['file']}: {reason[:300]}" + (f" (x{times})" if times > 1 else ""))
