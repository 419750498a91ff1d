"""``chronos bench freshness``: how soon a small upload is searchable, idle and behind a batch.

For each lane mode (``CHRONOS_LANES=off`` first, the same-run baseline, then ``on``), a warm
``chronos serve --with-workers N`` on a fresh embedded database (a temporary ``CHRONOS_HOME``):

1. **idle**: ``--probes`` small documents (a generated 2-page text PDF each, distinct content) uploaded
   one after another through ``POST /documents``; each is timed from the upload's start until a vector
   search (``GET /search?mode=vector&document_id=...``) finds it, after ``GET /documents/{id}`` said
   ``searchable``;
2. **under load**: a ``--batch``-document folder (generated Markdown and CSV, ``app/bench/api.py``'s
   mix, and a tenth small PDFs) is ingested with ``chronos ingest DIR`` (a folder: the batch lane), and
   once it is all queued a probe is uploaded every ``--interval`` seconds while the batch still has
   work queued (at most ``--probes``), each timed the same way. The batch's queue depth when each probe
   was uploaded is reported, so a probe that found the batch done is seen as such.

Prints p50/p90/max per mode and phase and the same-run ratio (lanes off / on) of the loaded p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.bench.api import TOKEN, generate, serve
from app.bench.docgen import paragraph, sentence
from app.samples import pdf

FINAL = ("searchable", "failed")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("freshness", help="upload -> searchable of a small document, idle and behind a batch")
    p.add_argument("--probes", type=int, default=10, help="small documents timed per phase (default 10)")
    p.add_argument("--batch", type=int, default=200, help="documents in the batch ingested meanwhile (default 200)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between probes under load (default 2)")
    p.add_argument("--workers", type=int, default=1, help="worker slots of chronos serve (default 1)")
    p.add_argument("--modes", default="off,on", help="lane modes to run, in order (default off,on)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the batch per mode")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def small_pdf(rng: random.Random, number: int, pages: int = 2) -> bytes:
    """A distinct text PDF of ``pages`` pages: a title and ~40 lines of prose each."""
    out = []
    for page in range(1, pages + 1):
        words = " ".join(paragraph(rng, 6) for _ in range(4)).split()
        lines = [f"Report {number}, part {page}: {sentence(rng, 3)[:-1]}", ""]
        lines += [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)][:40]
        out.append(lines)
    return pdf(out)  # app/samples.py's text PDF writer (the bench extra's fpdf2 is not needed)


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_s": None, "p90_s": None, "max_s": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]
    return {"n": len(ordered), "p50_s": statistics.median(ordered), "p90_s": p90, "max_s": ordered[-1]}


async def request(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One call, tried again on a dropped connection (a loaded machine; an upload of the same bytes is
    the same document, so trying it again records nothing twice)."""
    for attempt in range(6):
        try:
            return await client.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt == 5:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class Prober:
    """Uploads distinct 2-page PDFs and times each until it is searchable."""

    def __init__(self, client: httpx.AsyncClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.number = 0

    async def probe(self) -> dict[str, Any]:
        self.number += 1
        body = small_pdf(self.rng, 90_000 + self.number)
        t0, wall0 = time.perf_counter(), time.time()
        files = {"file": (f"probe-{self.number}.pdf", body, "application/pdf")}
        r = await request(self.client, "POST", "/documents", files=files, headers=AUTH)
        r.raise_for_status()
        doc = r.json()["document_id"]
        while True:
            status = (await request(self.client, "GET", f"/documents/{doc}")).json()["status"]
            if status in FINAL:
                break
            await asyncio.sleep(0.02)
        wall1 = time.time()
        if status == "searchable":
            # Its status says searchable once ChunksEmbedded is in the log; what counts is a search
            # finding it (the vector projection applied): ask until one does.
            params = {"q": f"Report {90_000 + self.number}", "document_id": doc, "k": 1, "mode": "vector"}
            while True:
                hits = (await request(self.client, "GET", "/search", params=params, headers=AUTH)).json()["hits"]
                if hits:
                    break
                await asyncio.sleep(0.02)
        seconds, wall2 = time.perf_counter() - t0, time.time()
        events = (await request(self.client, "GET", f"/documents/{doc}/events")).json()["events"]
        stages = stage_gaps(events, wall0, wall1) | (
            {"to_found_by_search": round(wall2 - wall1, 4)} if status == "searchable" else {}
        )
        return {"document_id": doc, "status": status, "seconds": seconds, "stages": stages}


STAGE_EVENTS = ("DocumentUploaded", "DocumentConverted", "DocumentChunked", "ChunksEmbedded")


def stage_gaps(events: list[dict[str, Any]], posted: float, seen: float) -> dict[str, float]:
    """Where a probe's seconds went, from its events' ``recorded_at`` (the server's clock: the same
    machine's): the upload request, each stage from the previous one's event (dispatch, claim and
    the stage's work), Docling's own conversion time, and from the last event until the client saw
    ``searchable`` in the document's status (the 20 ms status poll); the probe adds the time from
    there until a vector search finds the document."""
    at: dict[str, float] = {}
    out: dict[str, float] = {}
    for e in events:
        if e["type"] in STAGE_EVENTS and e["type"] not in at:
            at[e["type"]] = datetime.fromisoformat(e["recorded_at"].replace("Z", "+00:00")).timestamp()
        if e["type"] == "DocumentConverted":
            out["docling_convert"] = float(e["data"]["durations"]["convert_s"])
    if len(at) != len(STAGE_EVENTS):
        return out
    times = [posted, *(at[t] for t in STAGE_EVENTS), seen]
    names = ["upload", "to_converted", "to_chunked", "to_embedded", "to_seen_searchable"]
    out |= {n: round(b - a, 4) for n, a, b in zip(names, times[:-1], times[1:], strict=True)}
    return out


def median_stages(probes: list[dict[str, Any]]) -> dict[str, float]:
    keys = sorted({k for p in probes for k in p["stages"]})
    return {k: round(statistics.median(p["stages"][k] for p in probes if k in p["stages"]), 4) for k in keys}


async def queued_jobs(client: httpx.AsyncClient) -> int:
    """Jobs queued or running (``chronos_jobs`` of /metrics)."""
    text = (await request(client, "GET", "/metrics")).text
    return sum(
        int(float(m.group(2)))
        for m in re.finditer(r'^chronos_jobs\{[^}]*status="(queued|running)"[^}]*\} (\S+)$', text, re.M)
    )


@contextlib.contextmanager
def lanes_env(mode: str) -> Iterator[None]:
    previous = os.environ.get("CHRONOS_LANES")
    os.environ["CHRONOS_LANES"] = mode
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CHRONOS_LANES", None)
        else:
            os.environ["CHRONOS_LANES"] = previous


async def run_mode(mode: str, args: argparse.Namespace, folder: Path, quiet: bool) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"chronos-bench-fresh-{mode}-"))
    try:
        with lanes_env(mode), serve(home, args.workers) as url:
            async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0)) as client:
                prober = Prober(client, seed=11)
                await prober.probe()  # warm: models loaded, converter process up (not counted)
                idle_probes = [await prober.probe() for _ in range(args.probes)]
                idle = [p["seconds"] for p in idle_probes]
                if not quiet:
                    print(f"[lanes {mode}] idle: p50 {statistics.median(idle):.2f}s over {len(idle)} probes; "
                          f"median stages (s): {median_stages(idle_probes)}")  # fmt: skip
                env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"CHRONOS_HOME": str(home)}
                t_batch = time.perf_counter()
                await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "app.cli", "ingest", str(folder)],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                queued_s = time.perf_counter() - t_batch
                probes: list[asyncio.Task[dict[str, Any]]] = []
                depths: list[int] = []
                while len(probes) < args.probes:
                    depth = await queued_jobs(client)
                    if depth == 0 or time.perf_counter() - t_batch > args.timeout:
                        break
                    depths.append(depth)
                    probes.append(asyncio.create_task(prober.probe()))
                    await asyncio.sleep(args.interval)
                loaded = [p["seconds"] for p in await asyncio.gather(*probes)]
                while await queued_jobs(client) and time.perf_counter() - t_batch < args.timeout:  # noqa: ASYNC110
                    await asyncio.sleep(1.0)  # the server's queue, polled over HTTP
                batch_s = time.perf_counter() - t_batch
        result = {
            "lanes": mode,
            "idle": stats(idle),
            "idle_stages_median_s": median_stages(idle_probes),
            "loaded": stats(loaded),
            "loaded_probes": [{"seconds": s, "queue_depth_at_upload": d} for s, d in zip(loaded, depths, strict=True)],
            "batch_documents": args.batch,
            "batch_queued_s": queued_s,
            "batch_done_s": batch_s,
        }
        if not quiet:
            print(f"[lanes {mode}] under load: {fmt(result['loaded'])}; batch done after {batch_s:.0f}s")
        return result
    finally:
        shutil.rmtree(home, ignore_errors=True)


def fmt(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "no probes"
    return f"p50 {s['p50_s']:.2f}s  p90 {s['p90_s']:.2f}s  max {s['max_s']:.2f}s  (n={s['n']})"


async def main(args: argparse.Namespace) -> int:
    quiet = args.json
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        print("--modes: a comma-separated list of on and off", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="chronos-bench-fresh-batch-"))
    try:
        pdfs = args.batch // 10
        for name, body, _type in generate(args.batch - pdfs, pdf_share=0.0, seed=17):
            (folder / name).write_bytes(body)
        rng = random.Random(23)
        for j in range(pdfs):
            (folder / f"batch-{j:04d}.pdf").write_bytes(small_pdf(rng, j, pages=rng.randint(1, 2)))
        uptime = os.getloadavg()
        runs = [await run_mode(mode, args, folder, quiet) for mode in modes]
        by_mode = {r["lanes"]: r for r in runs}
        ratio = None
        if "on" in by_mode and "off" in by_mode and by_mode["on"]["loaded"]["p50_s"]:
            ratio = by_mode["off"]["loaded"]["p50_s"] / by_mode["on"]["loaded"]["p50_s"]
        result = {
            "workers": args.workers,
            "load_average_before": uptime,
            "load_average_after": os.getloadavg(),
            "runs": runs,
            "loaded_p50_ratio_off_over_on": ratio,
        }
        if args.json:
            print(orjson.dumps(result).decode())
        else:
            print(f"\nchronos serve --with-workers {args.workers}; a 2-page PDF upload -> searchable")
            print(f"{'lanes':<6} {'phase':<7} figures")
            for r in runs:
                print(f"{r['lanes']:<6} {'idle':<7} {fmt(r['idle'])}")
                print(f"{r['lanes']:<6} {'loaded':<7} {fmt(r['loaded'])}  (batch of {r['batch_documents']})")
            if ratio is not None:
                print(f"loaded p50, lanes off / on: {ratio:.1f}x")
            print(f"load average before {uptime[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
