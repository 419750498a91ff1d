"""Small documents' upload→searchable while a hostile or slow document converts (issue 11 item 5).

``python -m app.bench.stall [--hostile deep-html|big-markdown] [--small 12] [--before-root DIR] [--json]``

On a scratch database of the configured server: one hostile document is uploaded first, then an
empty file, an executable and ``--small`` small documents (Markdown, HTML, CSV); one ``chronos worker``
process (``--concurrency 2``, the default of ``worker``, ``serve --with-workers`` and ``ingest --wait``)
runs until every small document is final or ``--cap`` seconds pass. Figures come from the log's own
timestamps (upload event → the event that made the document final), so they do not depend on how
often this script looks.

Before and after in one run: ``--before-root DIR`` (a checkout of the code before the change, e.g.
``git archive main | tar -x -C DIR``) first runs the same uploads with the worker started from that
checkout, then with this one; the figures of both, and their ratio, are printed together.

The worker is warmed up first (one document converted, chunked and embedded), so the figures hold
no model loading. Hostile documents:
* ``deep-html``: the issue's 550 KB HTML nested 50,000 deep (Docling runs for minutes on it);
* ``big-markdown``: a legitimate document that needs a long conversion (about a minute here): it
  passes every input check, so only sharing the converters keeps the small documents moving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from app.bench.docgen import make_markdown
from app.bench.scratch import scratch_database
from app.config import Settings
from app.runtime import open_runtime
from app.services.upload import ingest_stream
from events.blobs import aiter_bytes, aiter_file

ROOT = Path(__file__).resolve().parents[2]


def small_document(i: int, rng: random.Random) -> tuple[str, bytes]:
    words = " ".join(rng.choice(("ledger", "harbor", "quantum", "meadow", "copper", "falcon")) for _ in range(80))
    match i % 3:
        case 0:
            return f"small-{i}.md", f"# Note {i}\n\n{words} (note {i}).\n".encode()
        case 1:
            return f"small-{i}.html", f"<html><body><h1>Page {i}</h1><p>{words}</p></body></html>".encode()
        case _:
            rows = "\n".join(f"{r},{rng.choice(('a', 'b', 'c'))},{rng.randint(1, 99)},doc {i}" for r in range(12))
            return f"small-{i}.csv", f"id,kind,value,note\n{rows}\n".encode()


def hostile_file(kind: str, folder: Path) -> Path:
    if kind == "deep-html":
        path = folder / "deep.html"
        path.write_bytes(("<html><body>" + "<div>" * 50_000 + "deep" + "</div>" * 50_000 + "</body></html>").encode())
        return path
    return make_markdown(folder / "big.md", 15)


FINAL_SQL = """
SELECT e.stream_id, u.data ->> 'filename' AS filename,
       extract(epoch FROM min(e.recorded_at) - u.recorded_at) AS seconds,
       (array_agg(e.type ORDER BY e.position))[1] AS outcome
FROM events e JOIN events u ON u.stream_id = e.stream_id AND u.type = 'DocumentUploaded'
WHERE e.type = 'ChunksEmbedded' OR (e.type LIKE '%Failed' AND (e.data ->> 'final')::boolean)
GROUP BY e.stream_id, u.data ->> 'filename', u.recorded_at
"""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.before_root is None:
        return await run_once(args, ROOT)
    before = await run_once(args, args.before_root)
    after = await run_once(args, ROOT)
    ratio: dict[str, float | None] = {}
    for key in ("median", "max"):
        b, a = before["small_upload_to_searchable_s"][key], after["small_upload_to_searchable_s"][key]
        ratio[key] = round(b / a, 1) if a and b else None
    return {"before": before, "after": after, "small_upload_to_searchable_before_over_after": ratio}


async def run_once(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One pass: the worker runs the code of ``root`` (this checkout, or the one before the change)."""
    rng = random.Random(5)
    async with scratch_database("chronos_stall") as dsn:
        settings = Settings(database_url=dsn)
        with tempfile.TemporaryDirectory(prefix="chronos-stall-") as tmp:
            hostile = hostile_file(args.hostile, Path(tmp))
            env = {**os.environ, "DATABASE_URL": dsn, "PYTHONPATH": str(root)}
            env.pop("OPENAI_API_KEY", None)
            log = Path(tmp) / "worker.log"
            with log.open("wb") as out:
                worker = await asyncio.to_thread(
                    subprocess.Popen, [sys.executable, "-m", "app.cli", "worker", "--concurrency", "2"],
                    cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
                try:
                    async with open_runtime(settings) as rt:
                        # A warm worker (converter and embedder loaded) before the clock starts.
                        await _upload(rt, "warm-up.md", b"# Warm up\n\nThe first document loads the models.\n")
                        await _wait(settings, {"warm-up.md"}, args.cap)
                        started = time.monotonic()
                        await ingest_stream(rt.store, rt.blobs, aiter_file(hostile), filename=hostile.name,
                                            source="bench", actor="bench")  # fmt: skip
                        uploads = [("empty.md", b""), ("tool.md", b"\x7fELF\x02\x01\x01" + os.urandom(8192))]
                        uploads += [small_document(i, rng) for i in range(args.small)]
                        for name, body in uploads:
                            await _upload(rt, name, body)
                    await _wait(settings, {name for name, _ in uploads}, args.cap)
                    wall = time.monotonic() - started
                finally:
                    worker.terminate()
                    try:
                        await asyncio.to_thread(worker.wait, 60)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                async with open_runtime(settings) as rt:
                    rows = [dict(r) for r in await rt.pool.fetch(FINAL_SQL)]
    return {"code": "this checkout" if root == ROOT else str(root), **_figures(args, rows, hostile.name, wall)}


async def _upload(rt: Any, name: str, body: bytes) -> None:
    await ingest_stream(rt.store, rt.blobs, aiter_bytes(body), filename=name, source="bench", actor="bench")


async def _wait(settings: Settings, names: set[str], cap: float) -> None:
    """Until the documents of these names are final (or ``cap`` seconds)."""
    deadline = time.monotonic() + cap
    async with open_runtime(settings) as rt:
        while time.monotonic() < deadline:
            rows = await rt.pool.fetch(FINAL_SQL)
            if names <= {r["filename"] for r in rows}:
                return
            await asyncio.sleep(0.5)


def _figures(args: argparse.Namespace, rows: list[dict[str, Any]], hostile: str, wall_s: float) -> dict[str, Any]:
    small = [
        float(r["seconds"]) for r in rows if r["filename"].startswith("small-") and r["outcome"] == "ChunksEmbedded"
    ]
    rejected = {r["filename"]: round(float(r["seconds"]), 2) for r in rows if r["filename"] in ("empty.md", "tool.md")}
    host = next((r for r in rows if r["filename"] == hostile), None)
    return {
        "hostile": args.hostile,
        "small_documents": args.small,
        "small_searchable": len(small),
        "small_upload_to_searchable_s": {
            "median": round(statistics.median(small), 1) if small else None,
            "max": round(max(small), 1) if small else None,
        },
        "empty_and_executable_upload_to_failed_s": rejected,
        "hostile_outcome": None
        if host is None
        else {"event": host["outcome"], "after_s": round(float(host["seconds"]), 1)},
        "wall_s": round(wall_s, 1),
        "capped": len(small) < args.small,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m app.bench.stall", description=__doc__.split("\n", 1)[0])
    p.add_argument("--hostile", choices=("deep-html", "big-markdown"), default="deep-html")
    p.add_argument("--small", type=int, default=12)
    p.add_argument("--cap", type=float, default=900.0, help="stop waiting after this many seconds")
    p.add_argument("--before-root", help="a checkout of the code before the change: run it first, same uploads")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.before_root is not None:
        args.before_root = Path(args.before_root).resolve()
    figures = asyncio.run(run(args))
    if args.json:
        print(orjson.dumps(figures).decode())
        return
    for key, value in figures.items():
        print(f"{key:>40}: {value}")


if __name__ == "__main__":
    main()
