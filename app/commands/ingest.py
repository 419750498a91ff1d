"""``chronos ingest PATH… [--wait] [--key K] [--source NAME] [--sync [--dry-run] [--force]]``: upload
files and folders; optionally run the stages until done.

Every file of a folder is a logical document keyed by its path relative to the folder, in the
namespace ``--source NAME`` (default: the folder's absolute path), so an edited file becomes a new
revision of its document (docs/revisions.md). A single file is its content unless ``--key`` names it.
``--sync`` makes Chronos match the folder: new files uploaded, changed ones revised, vanished ones
deleted (``--dry-run`` prints the plan; a sync that would delete more than 15 % of the folder's
documents deletes nothing unless ``--force``).

``--collection NAME`` uploads into an existing collection (``default`` when not given; an unknown one
is refused before anything is uploaded, naming ``chronos collections create``); ``--meta k=v``
(repeatable, values are text) and ``--meta-json FILE|JSON`` give every file's metadata
(docs/collections.md). With ``--sync`` the folder is matched within that collection.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from app.catalogue.collections import DEFAULT, parse_metadata, parse_pairs, validate_metadata
from app.catalogue.state import DocumentState, Status
from app.errors import InvalidRequest
from app.pipeline.backend import backend_services
from app.pipeline.worker import Worker
from app.runtime import Runtime, open_runtime
from app.services.collections import require as require_collection
from app.services.delete import delete_document
from app.services.documents import Watch, document_states
from app.services.sync import MAX_DELETE_SHARE, SyncPlan
from app.services.sync import plan as sync_plan
from app.services.upload import IntakeResult, UploadRejected, ingest_stream
from app.supervisor import Supervisor
from events.blobs import aiter_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ingest", help="upload documents (files or folders, recursive)")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--wait", action="store_true", help="wait until every document is searchable or failed")
    p.add_argument("--no-workers", action="store_true", help="with --wait: don't run stage workers in-process")
    p.add_argument("--force", action="store_true",
                   help="without a key: upload content already stored as a new document; with --sync: delete past "
                        "the guard")  # fmt: skip
    p.add_argument("--key", help="the logical document a single FILE is (new content under it: a new revision)")
    p.add_argument("--source", help="a folder's namespace for its documents' keys (default: its absolute path)")
    p.add_argument(
        "--sync", action="store_true", help="make Chronos match the one folder given (upload, revise, delete)"
    )
    p.add_argument("--dry-run", action="store_true", help="with --sync: print the plan, change nothing")
    p.add_argument(
        "--max-delete-share",
        type=float,
        default=MAX_DELETE_SHARE,
        help="with --sync: refuse to delete more than this share of the folder's documents (0.15)",
    )
    p.add_argument("--collection", default=DEFAULT, help="the collection to upload into (default: default)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata of every file uploaded (repeatable; the value is text)")  # fmt: skip
    p.add_argument("--meta-json", metavar="FILE|JSON", help="metadata as a JSON object, or a file holding one")
    p.add_argument("--concurrency", type=int, default=2, help="in-process worker slots (default 2)")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print one JSON list of documents at the end")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Item:
    path: Path
    key: str | None  # None: the document is its content


def folder_prefix(folder: Path, source: str | None) -> str:
    """The key prefix of a folder's documents: ``folder:<source>:``."""
    return f"folder:{source or folder.resolve()}:"


def collect(paths: list[Path], *, key: str | None = None, source: str | None = None) -> list[Item]:
    files: list[Item] = []
    for path in paths:
        if path.is_dir():
            prefix = folder_prefix(path, source)
            files.extend(
                Item(p, prefix + p.relative_to(path).as_posix())
                for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.parts[len(path.parts) :])
            )
        elif path.is_file():
            files.append(Item(path, f"cli:{key}" if key else None))
        else:
            raise InvalidRequest(f"{path}: no such file or folder")
    if key and (len(paths) != 1 or not paths[0].is_file()):
        raise InvalidRequest("--key names one document: give exactly one FILE with it")
    return files


def metadata_of(args: argparse.Namespace) -> dict[str, Any]:
    """``--meta-json`` (a JSON object, or a file holding one) with ``--meta`` pairs over it."""
    out: dict[str, Any] = {}
    if args.meta_json:
        raw = args.meta_json
        if not raw.lstrip().startswith("{"):
            path = Path(raw)
            if not path.is_file():
                raise InvalidRequest(f"--meta-json {raw!r} is neither a JSON object nor a file")
            raw = path.read_text(encoding="utf-8")
        out.update(parse_metadata(raw, what="--meta-json"))
    out.update(parse_pairs(args.meta))
    return validate_metadata(out)


async def upload_all(
    rt: Runtime,
    files: list[Item],
    force: bool,
    quiet: bool,
    collection: str = DEFAULT,
    metadata: dict[str, Any] | None = None,
) -> tuple[list[IntakeResult], list[dict[str, Any]]]:
    results: list[IntakeResult] = []
    rejected: list[dict[str, Any]] = []
    with tqdm(total=len(files), desc="upload", unit="doc", disable=quiet) as bar:
        for item in files:
            path = item.path
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
                        force=force and item.key is None,
                        key=item.key,
                        collection=collection,
                        metadata=metadata,
                    )
                )
            except UploadRejected as exc:
                rejected.append({"filename": path.name, "path": str(path), "status": "rejected", "reason": str(exc)})
            bar.update(1)
    return results, rejected


async def wait_until_final(rt: Runtime, ids: list[str], quiet: bool, timeout: float | None) -> dict[str, DocumentState]:
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


def all_final(state: dict[str, DocumentState], ids: list[str]) -> bool:
    return len(state) == len(ids) and all(p.final for p in state.values())


async def wait_with_workers(
    rt: Runtime, ids: list[str], quiet: bool, args: argparse.Namespace
) -> dict[str, DocumentState]:
    """Run a worker process's back end in this process (unless ``--no-workers``) until every document
    is final. When every one is final already nothing is started: in particular no warm-up, whose
    model-loading threads cannot be interrupted and would hold the exit back for many seconds."""
    from projections.runner import catch_up_all

    services = []
    if not args.no_workers and not all_final(await document_states(rt.pool, ids), ids):
        services = backend_services(rt, Worker(rt, concurrency=args.concurrency, grace_s=10.0))
    async with Supervisor(services).running():
        state = await wait_until_final(rt, ids, quiet, args.timeout)
        await catch_up_all(rt.pool)
    return state


async def run(args: argparse.Namespace) -> int:
    if args.sync and (len(args.paths) != 1 or not args.paths[0].is_dir()):
        raise InvalidRequest("--sync makes Chronos match one folder: give exactly one DIR")
    if args.dry_run and not args.sync:
        raise InvalidRequest("--dry-run goes with --sync")
    files = collect(args.paths, key=args.key, source=args.source)
    metadata = metadata_of(args)
    if not files and not args.sync:
        print("nothing to ingest: no files found", file=sys.stderr)
        return 1
    quiet = args.json
    async with open_runtime(max_size=max(10, args.concurrency * 3 + 6)) as rt:
        collection = await require_collection(rt.store, args.collection)  # before anything is uploaded
        started = time.monotonic()
        deleted: list[str] = []
        if args.sync:
            prefix = folder_prefix(args.paths[0], args.source)
            files, deleted, plan = await _sync_plan(rt, files, prefix, args, collection)
            if args.dry_run:
                print(orjson.dumps(plan.to_json()).decode() if quiet else _plan_text(plan))
                return 0
        results, rejected = await upload_all(rt, files, args.force, quiet, collection, metadata)
        if deleted:
            for doc in deleted:
                await delete_document(rt.store, doc, "gone from the synced folder", "cli")
            if not quiet:
                print(f"deleted {len(deleted)} document(s) whose file is gone from the folder")
        new = sum(1 for r in results if r.created)
        if not quiet:
            print(
                f"uploaded {len(results)} documents ({new} new, {len(results) - new} already stored)"
                + (f", {len(rejected)} rejected" if rejected else "")
            )
        ids = list(dict.fromkeys(r.document_id for r in results))
        state: dict[str, DocumentState] = {}
        if args.wait and ids:
            state = await wait_with_workers(rt, ids, quiet, args)
        elapsed = time.monotonic() - started
        rows = _summary(results, rejected, state)
    if args.json:
        print(orjson.dumps(rows).decode())
    else:
        _print_summary(rows, elapsed if args.wait else None)
    not_final = [r for r in rows if args.wait and r["status"] not in ("searchable", "failed", "deleted", "rejected")]
    return 1 if not_final else 0


async def _sync_plan(
    rt: Runtime, files: list[Item], prefix: str, args: argparse.Namespace, collection: str
) -> tuple[list[Item], list[str], SyncPlan]:
    """What to upload and delete so the folder's documents match it (the guard raised when too many go)."""
    hashes = {item.key: await asyncio.to_thread(_sha256_of, item.path) for item in files if item.key}
    plan = await sync_plan(rt.pool, prefix, hashes, collection=collection)
    if not args.dry_run:
        plan.check_deletions(max_share=args.max_delete_share, force=args.force)
    wanted = set(plan.new) | set(plan.changed)
    return [i for i in files if i.key in wanted], list(plan.vanished.values()), plan


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plan_text(plan: SyncPlan) -> str:
    lines = [f"sync plan for {plan.source} ({plan.live} live documents now):"]
    lines += [f"  upload  {k.removeprefix(plan.source)}" for k in sorted(plan.new)]
    lines += [f"  revise  {k.removeprefix(plan.source)}" for k in sorted(plan.changed)]
    lines += [f"  delete  {k.removeprefix(plan.source)}" for k in sorted(plan.vanished)]
    lines.append(f"{len(plan.new)} new, {len(plan.changed)} changed, {len(plan.unchanged)} unchanged, "
                 f"{len(plan.vanished)} to delete ({plan.delete_share:.0%})")  # fmt: skip
    return "\n".join(lines)


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
                "collection": r.collection,
                "metadata_updated": r.metadata_updated,
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
