"""``chronos bench compare``: Chronos end to end against LlamaIndex's own ingestion, same run.

Same folder of documents, same PostgreSQL server (each side gets a fresh database on it), same
embedding model (all-MiniLM-L6-v2, offline), same Docling PDF pipeline. Each side runs in its own
process (``app.bench.chronos_side``, ``app.bench.llamaindex_baseline``), one after the other, so
neither shares warm caches with the other and memory is measured per side: the peak RSS (and PSS)
of the side's whole process tree, converter children included, sampled every 0.2 s. The database
server is outside both trees (shared, like the machine). CPU-seconds are reported per side: its
process tree and the server's share, and the *floor* (CPU-seconds / cores) with wall / floor
(``app/bench/cpu.py``; over each side's whole process, warm-up included).

Both sides load their models before their clock starts (warm-up reported separately). Figures:
documents/min (documents that reached a final state, per minute), chunks/s (chunks written with
a vector, per second) and the ratio Chronos / LlamaIndex.

A shared machine's speed drifts by 10-20 % from one minute to the next, so one pair of runs can
land either way. ``--rounds N`` runs the pair N times, alternating which side goes first, and
reports each side's median round and the median of the per-round ratios (each round's two sides
ran close together in time, so their ratio is steadier than either figure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from app.bench.busy import BusySampler
from app.bench.cpu import children_cpu_s, floor_figures, server_cpu_s
from app.bench.memory import TreeSampler
from app.bench.scratch import scratch_database
from app.commands.ingest import collect
from app.config import Settings
from app.db import resolve_dsn, throwaway_database

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent.parent / "shared" / "corpus"
SIDES = ("chronos", "llamaindex")


async def _install_pgvector(conn: asyncpg.Connection) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


@asynccontextmanager
async def vector_database(prefix: str = "llamaindex_bench") -> AsyncIterator[str]:
    """An empty database with pgvector on the configured server for the PGVectorStore; dropped after."""
    base = await resolve_dsn(Settings.from_env())
    async with throwaway_database(base, f"{prefix}_{os.getpid()}", prepare=_install_pgvector) as dsn:
        yield dsn


async def run_side(module: str, args: list[str], quiet: bool) -> tuple[dict[str, Any], dict[str, object]]:
    """Run ``python -m module args…`` in its own process; (its JSON result, its tree's memory peaks)."""
    with tempfile.TemporaryDirectory(prefix="chronos-compare-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", module, *args, "--out", str(out)] + (["--quiet"] if quiet else [])
        started = time.perf_counter()
        tree0, server0 = children_cpu_s(), server_cpu_s()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE if quiet else None
        )
        with TreeSampler(proc.pid) as sampler, BusySampler() as busy:
            _out, err = await proc.communicate()
        wall = time.perf_counter() - started
        server1 = server_cpu_s()
        server_s = None if server0 is None or server1 is None else server1 - server0
        cpu = floor_figures(children_cpu_s() - tree0, server_s, wall)
        if proc.returncode != 0 or not out.exists():
            tail = (err or b"").decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{module} exited with status {proc.returncode}; {tail or 'see the output above'}")
        result: dict[str, Any] = orjson.loads(out.read_bytes())
    result["process_wall_s"] = round(wall, 3)
    result["cpu"] = cpu  # the side's whole process (warm-up included) and the server's share
    result["busy"] = busy.profile(result.get("timed_window"))  # where the wall exceeds the floor
    return result, sampler.result.as_dict()


def figures(side: dict[str, Any], memory: dict[str, object]) -> dict[str, Any]:
    seconds = float(side["seconds"])
    final = int(side["searchable"]) + int(side["failed"])
    return {
        **side,
        "documents_per_min": round(final / seconds * 60, 2) if seconds else None,
        "chunks_per_s": round(int(side["chunks"]) / seconds, 2) if seconds else None,
        "memory": memory,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


@dataclass(frozen=True)
class CompareOptions:
    """How both sides run: Chronos's worker slots and time limit, LlamaIndex's splitter and batch."""

    concurrency: int = 2
    chunk_size: int = 256
    chunk_overlap: int = 32
    embed_batch: int = 32
    timeout: float | None = None


async def run_pair(
    files: list[Path], options: CompareOptions, sides: tuple[str, ...] = SIDES, quiet: bool = False
) -> dict[str, Any]:
    """One round: each side in ``sides`` once, in that order."""
    result: dict[str, Any] = {"files": len(files)}
    with tempfile.TemporaryDirectory(prefix="chronos-compare-") as tmp:
        listing = Path(tmp) / "files.json"
        listing.write_bytes(orjson.dumps([str(f) for f in files]))
        common = ["--files-from", str(listing)]
        for name in sides:
            if name == "chronos":
                async with scratch_database("chronos_compare") as dsn:
                    extra = ["--concurrency", str(options.concurrency)] + (
                        ["--timeout", str(options.timeout)] if options.timeout else []
                    )
                    side, memory = await run_side("app.bench.chronos_side", ["--dsn", dsn, *common, *extra], quiet)
            else:
                async with vector_database() as dsn:
                    extra = [
                        "--chunk-size",
                        str(options.chunk_size),
                        "--chunk-overlap",
                        str(options.chunk_overlap),
                        "--embed-batch",
                        str(options.embed_batch),
                    ]
                    side, memory = await run_side(
                        "app.bench.llamaindex_baseline", ["--dsn", dsn, *common, *extra], quiet
                    )
            result[name] = figures(side, memory)
    if "chronos" in result and "llamaindex" in result:
        c, li = result["chronos"], result["llamaindex"]
        result["ratio"] = {
            "documents_per_min": _ratio(c["documents_per_min"], li["documents_per_min"]),
            "chunks_per_s": _ratio(c["chunks_per_s"], li["chunks_per_s"]),
            "peak_rss": _ratio(c["memory"]["peak_rss_mb"], li["memory"]["peak_rss_mb"]),
            "peak_pss": _ratio(c["memory"]["peak_pss_mb"], li["memory"]["peak_pss_mb"]),
        }
    return result


def _median_round(rounds: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """The side's round with the median time (the lower middle one for an even count)."""
    ordered = sorted((r[side] for r in rounds), key=lambda s: float(s["seconds"]))
    return ordered[(len(ordered) - 1) // 2]


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each side's median round, the median of the per-round ratios, and every round's figures."""
    result: dict[str, Any] = {"files": rounds[0]["files"]}
    for side in SIDES:
        if side in rounds[0]:
            result[side] = _median_round(rounds, side)
    if len(rounds) > 1:
        result["rounds"] = [
            {
                side: {"seconds": r[side]["seconds"], "documents_per_min": r[side]["documents_per_min"]}
                for side in SIDES
                if side in r
            }
            | ({"ratio": r["ratio"]} if "ratio" in r else {})
            for r in rounds
        ]
    if all("ratio" in r for r in rounds):
        result["ratio"] = {
            key: round(statistics.median(float(r["ratio"][key]) for r in rounds), 3)
            if all(r["ratio"][key] is not None for r in rounds)
            else None
            for key in rounds[0]["ratio"]
        }
        result["goal"] = {"minimum": 1.0, "aim": 1.5}
    return result


async def run_compare(
    files: list[Path], options: CompareOptions, sides: tuple[str, ...] = SIDES, quiet: bool = False, rounds: int = 1
) -> dict[str, Any]:
    """``rounds`` rounds of both sides (alternating which goes first), combined by ``combine``."""
    results = []
    for i in range(max(1, rounds)):
        order = sides if i % 2 == 0 else tuple(reversed(sides))
        if not quiet and rounds > 1:
            print(f"round {i + 1} of {rounds}: {' then '.join(order)}", file=sys.stderr)
        results.append(await run_pair(files, options, order, quiet))
    return combine(results)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compare", help="Chronos end to end vs LlamaIndex IngestionPipeline (docs/min, chunks/s, RSS)")
    p.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="documents to ingest (default: the corpus)")
    p.add_argument("--limit", type=int, default=None, help="only the first N files (sorted by path)")
    p.add_argument("--concurrency", type=int, default=2, help="Chronos worker slots (default 2)")
    p.add_argument("--chunk-size", type=int, default=256, help="LlamaIndex SentenceSplitter chunk size (tokens)")
    p.add_argument("--chunk-overlap", type=int, default=32)
    p.add_argument("--embed-batch", type=int, default=32, help="LlamaIndex HuggingFaceEmbedding batch size")
    p.add_argument("--only", choices=SIDES, default=None, help="run one side only")
    p.add_argument("--timeout", type=float, default=None, help="give the Chronos side up after this many seconds")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run both sides this many times, alternating the order; report medians (default 1)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


BASELINE_MODULES = (
    "llama_index.core",
    "llama_index.embeddings.huggingface",
    "llama_index.readers.docling",
    "llama_index.vector_stores.postgres",
)


def missing_baseline_modules() -> list[str]:
    """The LlamaIndex packages the baseline imports that are not installed (the ``bench`` extra)."""
    import importlib.util

    missing = []
    for name in BASELINE_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is absent
            found = False
        if not found:
            missing.append(name)
    return missing


async def main(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        print(f"{args.folder} is not a folder of documents (use --folder DIR)", file=sys.stderr)
        return 2
    files = [item.path for item in collect([args.folder])][: args.limit]
    if not files:
        print(f"no files in {args.folder}", file=sys.stderr)
        return 2
    missing = missing_baseline_modules() if args.only != "chronos" else []
    if missing:
        print(
            f"the LlamaIndex side needs the bench extra ({', '.join(missing)} not installed): run "
            "`make install-bench`, or `--only chronos` for the Chronos side alone",
            file=sys.stderr,
        )
        return 2
    options = CompareOptions(
        concurrency=args.concurrency,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        embed_batch=args.embed_batch,
        timeout=args.timeout,
    )
    result = await run_compare(
        files, options, (args.only,) if args.only else SIDES, quiet=args.json, rounds=args.rounds
    )
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print_table(result)
    return 0


def print_table(result: dict[str, Any]) -> None:
    sides = [s for s in SIDES if s in result]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, get: Any) -> None:
        rows.append((label, [str(get(result[s])) for s in sides]))

    row("documents (searchable/failed)", lambda r: f"{r['documents']} ({r['searchable']}/{r['failed']})")
    row("chunks with vectors", lambda r: r["chunks"])
    row("seconds (warm)", lambda r: r["seconds"])
    row("documents/min", lambda r: r["documents_per_min"])
    row("chunks/s", lambda r: r["chunks_per_s"])
    row("peak RSS MB (tree sum)", lambda r: r["memory"]["peak_rss_mb"])
    row("peak PSS MB (tree)", lambda r: r["memory"]["peak_pss_mb"])
    row("processes at peak", lambda r: r["memory"]["peak_processes"])
    row("warm-up s (not timed)", lambda r: r["warm_up_s"])
    row("CPU-s: process tree", lambda r: r.get("cpu", {}).get("tree_cpu_s"))
    row("CPU-s: PostgreSQL server", lambda r: r.get("cpu", {}).get("server_cpu_s"))
    row("floor s (CPU-s / cores)", lambda r: r.get("cpu", {}).get("floor_s"))
    row("process wall s / floor", lambda r: r.get("cpu", {}).get("wall_over_floor"))
    ratio = result.get("ratio", {})
    header = ["", *sides] + (["Chronos/LlamaIndex"] if ratio else [])
    ratio_of = {
        "documents/min": "documents_per_min",
        "chunks/s": "chunks_per_s",
        "peak RSS MB (tree sum)": "peak_rss",
        "peak PSS MB (tree)": "peak_pss",
    }
    table = [header] + [
        [label, *vals] + ([str(ratio.get(ratio_of[label], ""))] if ratio and label in ratio_of else [""] * bool(ratio))
        for label, vals in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"{result['files']} files")
    for i, line in enumerate(table):
        print("  ".join(cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j]) for j, cell in enumerate(line)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for s in sides:
        parts = result[s]["memory"].get("pss_at_peak_mb") or {}
        if len(parts) > 1:
            print(f"{s} PSS at its peak: " + ", ".join(f"{role} {mb} MB" for role, mb in parts.items()))
    for s in sides:
        busy = busy_line(result[s].get("busy") or {})
        if busy:
            print(f"{s} {busy}")
    if "chronos" in result:
        c = result["chronos"]
        print(f"Chronos also wrote {c['events']} events ({c['cost_events']} cost entries) to its log")
    for s in sides:
        for f in result[s]["failures"]:
            print(f"  {s} failed {f['filename']}: {f['reason'][:160]}")
    for i, r in enumerate(result.get("rounds", []), 1):
        times = ", ".join(f"{s} {r[s]['seconds']} s" for s in sides if s in r)
        print(f"  round {i}: {times}" + (f"; ratio {r['ratio']['documents_per_min']}" if "ratio" in r else ""))
    if ratio:
        median = " (median of the rounds' ratios)" if "rounds" in result else ""
        print(f"goal: Chronos >= 1.0x LlamaIndex (aim 1.5x); documents/min ratio {ratio['documents_per_min']}{median}")


def busy_line(busy: dict[str, Any]) -> str:
    """``cores busy …`` of a side's ``busy`` profile (app/bench/busy.py), or "" without one."""
    if busy.get("process") is None:
        return ""
    parts = [f"cores busy of {busy['cores']} (machine-wide): whole process {busy['process']}"]
    if busy.get("timed") is not None:
        tenths = " ".join("-" if v is None else f"{v:.1f}" for v in busy.get("timed_parts") or [])
        parts.append(f"timed phase {busy['timed']} (by tenth: {tenths})")
    if busy.get("steal_share"):
        parts.append(f"steal {busy['steal_share']:.1%}")
    return "; ".join(parts)
