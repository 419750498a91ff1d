"""``chronos bench api``: concurrent uploads against a real ``chronos serve --with-workers``.

Starts ``chronos serve`` as a child process on a fresh embedded database (a temporary
``CHRONOS_HOME``; ``--home`` to choose one), uploads N generated documents of distinct content
all at once (Markdown and CSV of mixed sizes, small text PDFs), and reports uploads/s and the
p50/p99 latency of the uploads. Then it waits until every document is final (searchable or
failed) and proves the counts: exactly N documents exist, N DocumentUploaded events, all final.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.bench.docgen import paragraph, sentence

TOKEN = "bench-api-token"
FINAL = ("searchable", "failed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("api", help="concurrent uploads against chronos serve --with-workers (uploads/s, p50/p99)")
    p.add_argument("--uploads", type=int, default=500, help="documents to upload, all at once (default 500)")
    p.add_argument("--concurrency", type=int, default=0, help="uploads in flight at once (default: all)")
    p.add_argument("--workers", type=int, default=2, help="worker slots in the server process (default 2)")
    p.add_argument("--pdf-share", type=float, default=0.1, help="fraction of PDFs (default 0.1)")
    p.add_argument("--home", type=Path, default=None, help="CHRONOS_HOME for the server (default: a fresh temp dir)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for every document to be final")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def generate(n: int, pdf_share: float, seed: int = 5) -> list[tuple[str, bytes, str]]:
    """Distinct documents: (filename, bytes, content type). Sizes spread from ~1 KB to ~64 KB."""
    rng = random.Random(seed)
    docs: list[tuple[str, bytes, str]] = []
    n_pdf = round(n * pdf_share)
    for i in range(n - n_pdf):
        size = int(1024 * 2 ** rng.uniform(0, 6))  # 1 KB .. 64 KB, log-uniform
        if i % 2 == 0:
            parts = [f"# Bench document {i}\n"]
            total = 0
            while total < size:
                block = f"\n## {sentence(rng, 4)[:-1]}\n\n{paragraph(rng, rng.randint(2, 6))}\n"
                parts.append(block)
                total += len(block)
            docs.append((f"bench-{i:04d}.md", "".join(parts).encode(), "text/markdown"))
        else:
            rows = [f"id,name,region,amount,note_{i}"]
            total = 0
            r = 0
            while total < size:
                r += 1
                name = f"{rng.choice(['alpha', 'beta', 'gamma'])}-{i}-{r}"
                row = f"{r},{name},{sentence(rng, 2)[:-1]},{rng.randint(1, 9999)},{sentence(rng, 5)[:-1]}"
                rows.append(row)
                total += len(row) + 1
            docs.append((f"bench-{i:04d}.csv", ("\n".join(rows) + "\n").encode(), "text/csv"))
    for j in range(n_pdf):
        docs.append((f"bench-pdf-{j:04d}.pdf", make_pdf(rng, j, pages=rng.randint(1, 2)), "application/pdf"))
    rng.shuffle(docs)
    return docs


def make_pdf(rng: random.Random, number: int, pages: int) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(20, 20, 20)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 15)
        pdf.multi_cell(0, 8, f"Report {number}, part {page}: {sentence(rng, 3)[:-1]}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for _ in range(3):
            pdf.multi_cell(0, 5.5, paragraph(rng, 3), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    buf = io.BytesIO()
    pdf.output(buf)
    return buf.getvalue()


@contextlib.contextmanager
def serve(home: Path, workers: int) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(CHRONOS_HOME=str(home), CHRONOS_API_TOKENS=TOKEN, CHRONOS_MAX_UPLOAD_BYTES=str(64 * 1024 * 1024))
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--with-workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on (http://\S+?)/? ", line)
            if match:
                url = match.group(1).rstrip("/")
                break
        if url is None:
            raise RuntimeError(f"chronos serve did not start (exit {proc.wait()})")
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()  # keep the pipe from filling
        deadline = time.monotonic() + 180
        while True:  # the socket is bound at once; the app answers once the database is up
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chronos serve did not become healthy")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(
            [sys.executable, "-m", "app.cli", "db", "stop"],
            env={**os.environ, "CHRONOS_HOME": str(home)},
            capture_output=True,
            check=False,
        )


def _drain(proc: subprocess.Popen[str]) -> None:
    for _line in proc.stdout or ():
        pass


async def upload_all(url: str, docs: list[tuple[str, bytes, str]], concurrency: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(600.0)) as client:

        async def one(name: str, body: bytes, content_type: str) -> None:
            async with gate:
                t0 = time.perf_counter()
                r = await client.post(
                    "/documents",
                    files={"file": (name, body, content_type)},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code in (200, 202):
                ids.append(r.json()["document_id"])

        t0 = time.perf_counter()
        await asyncio.gather(*(one(*d) for d in docs))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "wall_s": wall,
        "uploads_per_s": len(docs) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "document_ids": ids,
    }


async def all_documents(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/documents", params=params)).json()
        rows += page["documents"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows


async def wait_final(url: str, expected: set[str], timeout: float, quiet: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        while True:
            rows = await all_documents(client)
            final = [r for r in rows if r["status"] in FINAL]
            if not quiet:
                print(
                    f"\r  final {len(final)}/{len(expected)} after {time.perf_counter() - t0:.0f}s", end="", flush=True
                )
            if len(final) >= len(expected) or time.perf_counter() - t0 > timeout:
                break
            await asyncio.sleep(2.0)
        metrics = (await client.get("/metrics")).text
    if not quiet:
        print()
    uploaded = re.search(r'chronos_events_appended_total\{type="DocumentUploaded"\} (\d+)', metrics)
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    ids = {r["document_id"] for r in rows}
    return {
        "processing_s": time.perf_counter() - t0,
        "documents": len(rows),
        "by_status": by_status,
        "upload_events": int(uploaded.group(1)) if uploaded else None,
        "same_ids": ids == expected,
        "failures": [{"filename": r["filename"], "reason": r["last_error"]} for r in rows if r["status"] == "failed"][
            :10
        ],
    }


async def main(args: argparse.Namespace) -> int:
    quiet = args.json
    home = args.home or Path(tempfile.mkdtemp(prefix="chronos-bench-api-"))
    try:
        docs = generate(args.uploads, args.pdf_share)
        sizes = [len(d[1]) for d in docs]
        if not quiet:
            print(f"{len(docs)} documents generated: {sum(sizes) / 1e6:.1f} MB, {min(sizes)}..{max(sizes)} bytes")
        with serve(home, args.workers) as url:
            if not quiet:
                print(f"chronos serve --with-workers {args.workers} at {url} (CHRONOS_HOME={home})")
            up = await upload_all(url, docs, args.concurrency or len(docs))
            if not quiet:
                print(
                    f"uploads: {up['uploads_per_s']:.1f}/s over {up['wall_s']:.2f}s; p50 {up['p50_ms']:.0f} ms, "
                    f"p99 {up['p99_ms']:.0f} ms, max {up['max_ms']:.0f} ms; statuses {up['statuses']}"
                )
            done = await wait_final(url, set(up.pop("document_ids")), args.timeout, quiet)
        ok = (
            done["documents"] == len(docs)
            and done["upload_events"] == len(docs)
            and done["same_ids"]
            and sum(done["by_status"].get(s, 0) for s in FINAL) == len(docs)
            and up["statuses"] == {"202": len(docs)}
        )
        result = {
            "uploads": len(docs),
            "bytes": sum(sizes),
            "workers": args.workers,
            "upload": up,
            "processing": done,
            "documents_per_min": len(docs) / done["processing_s"] * 60,
            "ok": ok,
        }
        if args.json:
            print(orjson.dumps(result).decode())
        else:
            print(
                f"documents: {done['documents']} (expected {len(docs)}), DocumentUploaded events: "
                f"{done['upload_events']}, by status: {done['by_status']}"
            )
            print(
                f"all final after {done['processing_s']:.0f}s more ({result['documents_per_min']:.0f} documents/min); "
                f"{'OK' if ok else 'MISMATCH'}"
            )
            for f in done["failures"]:
                print(f"  failed {f['filename']}: {f['reason']}")
        return 0 if ok else 1
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
