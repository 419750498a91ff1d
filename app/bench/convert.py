"""``chronos bench convert``: pages/s, seconds, dollars per page and per document for each conversion
backend on a folder of documents (default: the shared corpus).

* ``local``: local Docling in warm converter processes (process start-up measured separately);
  documents per converter process start.
* ``modal``: the deployed Modal converter, through the service's own path (batcher, calls,
  fallback). Only the documents that would go to Modal are sent (PDFs unless ``--pipeline native``);
  the others are counted as converting locally. Dollars are the ledger's own cost lines for each
  document (``app.costs.modal_usage``: GPU, CPU and memory of its share of container time, cold start
  and idle window included), and the run reports documents per container start. Reported as
  unavailable, with the reason, when Modal cannot be reached or is not configured -- never with
  made-up figures.
* ``modal-local`` (opt-in): the Modal class's body run in-process with ``.local()`` on this
  machine's CPU: shows the body works, not what a GPU costs (no $ figure).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from app import costs
from app.convert import ConversionFailure, ConversionOutput, ConvertOptions, convert_batch, convert_file, sniff_path
from app.convert.backends import check_input
from app.convert.batcher import batcher
from app.convert.local import default_pool
from app.convert.options import ModalUsage, modal_configured, runs_on_modal
from app.convert.sniff import extension_for

BACKENDS = ("local", "modal", "modal-local")
DEFAULT_FOLDER = Path("../shared/corpus")


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of documents (use --folder DIR)")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _short_type(media_type: str) -> str:
    return "txt" if media_type == "text/plain" else extension_for(media_type)


class _Tally:
    def __init__(self) -> None:
        self.docs = 0
        self.converted = 0
        self.pages = 0
        self.seconds = 0.0
        self.cpu_s = 0.0
        self.gpu_s = 0.0
        self.usd = 0.0

    def add(self, out: ConversionOutput | None, seconds: float, usd: float) -> None:
        self.docs += 1
        self.seconds += seconds
        self.usd += usd
        if out is not None:
            self.converted += 1
            self.pages += out.page_count
            self.cpu_s += out.cpu_s
            self.gpu_s += out.gpu_s

    def figures(self, priced: bool = True) -> dict[str, Any]:
        return {
            "documents": self.docs,
            "converted": self.converted,
            "failed": self.docs - self.converted,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "pages_per_s": round(self.pages / self.seconds, 2) if self.seconds and self.pages else None,
            "docs_per_min": round(60 * self.docs / self.seconds, 1) if self.seconds else None,
            "s_per_doc": round(self.seconds / self.docs, 4) if self.docs else None,
            "usd_per_doc": round(self.usd / self.docs, 8) if self.docs and priced else None,
            "usd_per_page": round(self.usd / self.pages, 8) if self.pages and priced else None,
            "cpu_s": round(self.cpu_s, 3),
            "gpu_s": round(self.gpu_s, 3),
        }


def _cost(out: ConversionOutput) -> float:
    """What the ledger records for this conversion (the stage's own cost lines)."""
    if out.modal_usage:
        return sum(line.amount_usd for line in costs.modal_usages(out.modal_usage))
    return costs.local_cpu(out.cpu_s).amount_usd


async def bench_local(files: list[Path], options: ConvertOptions, quiet: bool) -> dict[str, Any]:
    pool = default_pool()
    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(None, pool.warm, options.memory_mb)
    startup_s = time.perf_counter() - started
    total = _Tally()
    by_type: defaultdict[str, _Tally] = defaultdict(_Tally)
    failures: list[dict[str, str]] = []
    local = ConvertOptions(
        backend="local", pipeline=options.pipeline, timeout_s=options.timeout_s, memory_mb=options.memory_mb
    )
    for path in tqdm(files, desc="local", unit="doc", disable=quiet, leave=False):
        kind = _short_type(sniff_path(path))
        t0 = time.perf_counter()
        out: ConversionOutput | None
        try:
            out = await convert_file(path, filename=path.name, media_type=sniff_path(path), options=local)
        except ConversionFailure as failure:
            out = None
            failures.append(
                {
                    "file": str(path.relative_to(path.parents[1])),
                    "error_class": failure.error_class,
                    "message": failure.message[:200],
                }
            )
        seconds = time.perf_counter() - t0
        usd = _cost(out) if out is not None else 0.0
        total.add(out, seconds, usd)
        by_type[kind].add(out, seconds, usd)
    return {
        "available": True,
        "label": "local Docling (converter processes)",
        **total.figures(),
        "process_startup_s": round(startup_s, 3),
        "processes_started": pool.started,
        "docs_per_process_start": round(total.docs / pool.started, 2) if pool.started else None,
        "by_type": {k: v.figures() for k, v in sorted(by_type.items())},
        "failures": failures,
    }


async def bench_modal(files: list[Path], options: ConvertOptions, quiet: bool) -> dict[str, Any]:
    if not modal_configured():
        return {
            "available": False,
            "reason": "MODAL_TOKEN_ID / MODAL_TOKEN_SECRET are not set; "
            "configure them and `modal deploy app/modal_app.py`",
        }
    items, local_only = [], 0
    for path in files:
        try:
            media = check_input(path, path.name, sniff_path(path))
        except ConversionFailure:
            continue
        if runs_on_modal(media, options.pipeline):
            items.append((path, path.name, media))
        else:
            local_only += 1
    if not items:
        return {
            "available": False,
            "reason": "no document in the folder goes to Modal (only PDFs do, unless --pipeline native)",
        }
    modal = ConvertOptions(
        backend="modal", pipeline=options.pipeline, timeout_s=options.timeout_s, memory_mb=options.memory_mb
    )
    calls_before = batcher().calls
    started = time.perf_counter()
    results = await convert_batch(items, modal)  # all at once: the batcher groups them into calls
    seconds = time.perf_counter() - started
    fallbacks = [r.fallback for r in results if r.fallback]
    if len(fallbacks) == len(results):
        return {"available": False, "reason": f"{fallbacks[0]['reason']}: {fallbacks[0]['message']}"}
    total = _Tally()
    usages: list[ModalUsage] = []
    for result in results:
        out = result if isinstance(result, ConversionOutput) and result.backend == "modal" else None
        usages += result.modal_usage
        total.add(
            out,
            seconds / len(results),
            _cost(result)
            if isinstance(result, ConversionOutput)
            else sum(line.amount_usd for line in costs.modal_usages(result.modal_usage)),
        )
    total.seconds = seconds
    starts = len({u.container_id for u in usages if u.started_container})
    rate = [costs.modal_rate_per_second(u.gpu, u.cpu_cores, u.memory_gib) for u in usages]
    gpu = usages[0].gpu if usages else options.gpu
    return {
        "available": True,
        "label": f"Modal ({gpu}) through the service's batcher",
        **total.figures(),
        "calls": batcher().calls - calls_before,
        "container_starts": starts,
        "docs_per_container_start": round(len(results) / starts, 2) if starts else None,
        "container_s": round(sum(u.container_s for u in usages), 3),
        "cold_start_usd": round(sum(u.cold_start_s * r for u, r in zip(usages, rate, strict=True)), 8),
        "idle_usd": round(sum(u.idle_s * r for u, r in zip(usages, rate, strict=True)), 8),
        "fallbacks": len(fallbacks),
        "converted_locally_not_gpu": local_only,
    }


async def bench_modal_local(files: list[Path], quiet: bool) -> dict[str, Any]:
    from app.modal_app import Converter

    body = Converter(device="cpu")  # type: ignore[call-arg]  # Modal synthesizes the parameter
    total = _Tally()
    for path in tqdm(files, desc="modal .local()", unit="doc", disable=quiet, leave=False):
        try:
            media = check_input(path, path.name, sniff_path(path))
        except ConversionFailure:
            total.add(None, 0.0, 0.0)
            continue
        t0 = time.perf_counter()
        reply = (
            await asyncio.to_thread(
                body.convert.local,
                [{"filename": path.name, "media_type": media, "data": path.read_bytes(), "pipeline": "default"}],
                None,
            )
        )["results"][0]
        seconds = time.perf_counter() - t0
        out = None
        if reply["ok"]:
            out = ConversionOutput(
                b"",
                "",
                reply["page_count"],
                "modal",
                reply["pipeline"],
                reply["docling_version"],
                reply["convert_s"],
                seconds,
                0.0,
                0.0,
                None,
            )
        total.add(out, seconds, 0.0)
    return {
        "available": True,
        "label": "Modal function body via .local() on this CPU (not a GPU figure)",
        **total.figures(priced=False),
    }


async def run_bench(folder: Path, backends: list[str], options: ConvertOptions, quiet: bool) -> dict[str, Any]:
    files = _files(folder)
    result: dict[str, Any] = {
        "folder": str(folder),
        "documents": len(files),
        "pipeline": options.pipeline,
        "backends": {},
    }
    for name in backends:
        if name == "local":
            result["backends"][name] = await bench_local(files, options, quiet)
        elif name == "modal":
            result["backends"][name] = await bench_modal(files, options, quiet)
        elif name == "modal-local":
            result["backends"][name] = await bench_modal_local(files, quiet)
        else:
            raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return result


def _print(result: dict[str, Any]) -> None:
    print(f"{result['documents']} documents in {result['folder']} (pipeline {result['pipeline']})")
    head = (
        f"{'backend':<12} {'docs':>5} {'ok':>4} {'pages':>6} {'pages/s':>8} {'s/doc':>8} {'docs/min':>9} "
        f"{'$/doc':>11} {'$/page':>11}"
    )
    print(head)

    def row(name: str, f: dict[str, Any]) -> str:
        usd = f"{f['usd_per_doc']:.8f}" if f.get("usd_per_doc") is not None else "n/a"
        per_page = f"{f['usd_per_page']:.8f}" if f.get("usd_per_page") is not None else "n/a"
        pps = f"{f['pages_per_s']:.2f}" if f.get("pages_per_s") is not None else "n/a"
        return (
            f"{name:<12} {f['documents']:>5} {f['converted']:>4} {f['pages']:>6} {pps:>8} "
            f"{f['s_per_doc']:>8.3f} {f['docs_per_min']:>9.1f} {usd:>11} {per_page:>11}"
        )

    for name, figures in result["backends"].items():
        if not figures["available"]:
            print(f"{name:<12} unavailable: {figures['reason']}")
            continue
        print(row(name, figures))
        for kind, sub in figures.get("by_type", {}).items():
            print(row(f"  {kind}", sub))
        if "process_startup_s" in figures:
            print(
                f"  converter process start-up (fork server, Docling import): {figures['process_startup_s']:.1f} s,"
                f" {figures['processes_started']} process(es) started, {figures['docs_per_process_start']} "
                "document(s) per process start"
            )
        if "container_starts" in figures:
            print(
                f"  {figures['calls']} call(s), {figures['container_starts']} container start(s), "
                f"{figures['docs_per_container_start']} document(s) per container start; of the $: cold start "
                f"${figures['cold_start_usd']:.6f}, idle window ${figures['idle_usd']:.6f}; "
                f"{figures['fallbacks']} fell back to local, {figures['converted_locally_not_gpu']} need no GPU"
            )
        for failure in figures.get("failures", []):
            print(f"  failed: {failure['file']}: {failure['error_class']}")
        if name == "modal-local":
            print(f"  ({figures['label']})")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="pages/s, s/doc, $/page and $/doc per conversion backend on a folder")
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="documents to convert (recursive)")
    p.add_argument(
        "--backends", default="local,modal", help=f"comma-separated, from {', '.join(BACKENDS)} (default: local,modal)"
    )
    p.add_argument("--pipeline", default="default", choices=["default", "native", "standard"])
    p.add_argument("--timeout", type=float, default=300.0, help="per-document limit, seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    options = ConvertOptions(pipeline=args.pipeline, timeout_s=args.timeout)
    result = await run_bench(args.folder, backends, options, quiet=args.json)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        _print(result)
    return 0
