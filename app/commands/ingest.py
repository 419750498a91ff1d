"""``chronos ingest PATH… [--wait]``: upload files and folders; optionally run the stages until done."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from app.catalogue.state import DocumentState, Status
from app.errors import InvalidRequest
from app.pipeline.worker import Worker
from app.runtime import Runtime, open_runtime
from app.services.documents import Watch
from app.services.upload import IntakeResult, UploadRejected, ingest_stream
from events.blobs import aiter_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ingest", help="upload documents (files or folders, recursive)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--wait", action="store_true", help="wait until every document is searchable or failed")
    p.add_argument("--no-workers", action="store_true", help="with --wait: don't run stage workers in-process")
    p.add_argument("--force", action="store_true", help="upload content already stored as a new document")
    p.add_argument("--concurrency", type=int, default=2, help="in-process worker slots (default 2)")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print one JSON list of documents at the end")
    p.set_defaults(func=run)


def collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.parts[len(path.parts) :])
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidRequest(f"{path}: no such file or folder")
    return files


async def upload_all(
    rt: Runtime, files: list[Path], force: bool, quiet: bool
) -> tuple[list[IntakeResult], list[dict[str, Any]]]:
    results: list[IntakeResult] = []
    rejected: list[dict[str, Any]] = []
    with tqdm(total=len(files), desc="upload", unit="doc", disable=quiet) as bar:
        for path in files:
            try:
                results.append(
                    await ingest_stream(
                        rt.store,
                        rt.blobs,
                        aiter_file(path),
                        filename=path.name,
                        source="cli",
                        source_ref=str(path),
                        actor="cli",
                        force=force,
                    )
                )
            except UploadRejected as exc:
                rejected.append({"filename": path.name, "path": str(path), "status": "rejected", "reason": str(exc)})
            bar.update(1)
    return results, rejected


async def wait_until_final(
    rt: Runtime, ids: list[str], quiet: bool, timeout: float | None
) -> dict[str, DocumentState]:
    """Watch the documents (the one reducer over their streams) until every one is final."""
    deadline = None if timeout is None else time.monotonic() + timeout
    bars = {
        name: tqdm(total=len(ids), desc=name, unit="doc", disable=quiet, position=i, leave=True)
        for i, name in enumerate(["converted", "chunked", "embedded"])
    }
    watch = Watch.of(ids)
    try:
        while True:
            states = {d: s for d, s in (await watch.refresh(rt.pool)).items() if s is not None}
            counts = {
                "converted": sum(1 for s in states.values() if s.conversion_id or s.final),
                "chunked": sum(1 for s in states.values() if s.chunk_set_id or s.final),
                "embedded": sum(1 for s in states.values() if s.final),
            }
            failed = sum(1 for s in states.values() if s.status is Status.FAILED)
            for name, bar in bars.items():
                bar.n = counts[name]
                bar.set_postfix(failed=failed, refresh=False)
                bar.refresh()
            if watch.all_final:
                return states
            if deadline is not None and time.monotonic() > deadline:
                return states
            await asyncio.sleep(0.5)
    finally:
        for bar in bars.values():
            bar.close()


async def run(args: argparse.Namespace) -> int:
    files = collect(args.paths)
    if not files:
        print("nothing to ingest: no files found", file=sys.stderr)
        return 1
    quiet = args.json
    async with open_runtime(max_size=max(10, args.concurrency * 3 + 6)) as rt:
        started = time.monotonic()
        results, rejected = await upload_all(rt, files, args.force, quiet)
        new = sum(1 for r in results if r.created)
        if not quiet:
            print(
                f"uploaded {len(results)} documents ({new} new, {len(results) - new} already stored)"
                + (f", {len(rejected)} rejected" if rejected else "")
            )
        ids = list(dict.fromkeys(r.document_id for r in results))
        state: dict[str, DocumentState] = {}
        if args.wait and ids:
            stop = asyncio.Event()
            worker_task = None
            if not args.no_workers:
                worker = Worker(rt, concurrency=args.concurrency, grace_s=10.0)
                worker_task = asyncio.create_task(worker.run(stop))
            try:
                state = await wait_until_final(rt, ids, quiet, args.timeout)
                from projections.runner import catch_up_all

                await catch_up_all(rt.pool, rt.dsn)
            finally:
                stop.set()
                if worker_task is not None:
                    await worker_task
        elapsed = time.monotonic() - started
        rows = _summary(results, rejected, state)
    if args.json:
        print(orjson.dumps(rows).decode())
    else:
        _print_summary(rows, elapsed if args.wait else None)
    not_final = [r for r in rows if args.wait and r["status"] not in ("searchable", "failed", "deleted", "rejected")]
    return 1 if not_final else 0


def _summary(
    results: list[IntakeResult], rejected: list[dict[str, Any]], state: dict[str, DocumentState]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in results:
        if r.document_id in seen:
            continue
        seen.add(r.document_id)
        p = state.get(r.document_id)
        rows.append(
            {
                "document_id": r.document_id,
                "filename": r.filename,
                "media_type": r.media_type,
                "size": r.size,
                "created": r.created,
                "status": str(p.status) if p else "uploaded",
                "reason": p.failure if p else None,
            }
        )
    return rows + rejected


def _print_summary(rows: list[dict[str, Any]], elapsed: float | None) -> None:
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        if r["status"] in ("failed", "rejected"):
            print(f"  {r['status']:<9} {r['filename']}: {r['reason']}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
    print(f"{len(rows)} documents: {summary}")
    if elapsed is not None and elapsed > 0:
        print(f"end to end in {elapsed:.1f}s ({len(rows) / elapsed * 60:.1f} documents/min)")
