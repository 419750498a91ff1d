"""``chronos bench revisions [--sections 160] [--rounds 3] [--json]``: what a small edit of a long
document costs, and how long search takes to switch to it (docs/revisions.md).

A generated Markdown document of ``--sections`` sections (160 ≈ a 40-page report) is ingested under a
key on a scratch database, with the local embedding model, by an in-process worker. Each round edits
one paragraph and uploads the new revision: the figures are the chunks of the new chunk set, how many
of them were embedded versus taken from the embedding cache (``ChunksEmbedded.chunk_count`` /
``reused_count``), the embed tokens paid (ledger quantity), and the switch latency — from the upload of
the revision to the moment ``documents.serving_revision`` names it (search answers from it). The first
ingest is the same-run baseline: every chunk embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from typing import Any

import orjson

from app.bench.scratch import scratch_database
from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.catalogue.state import Status
from app.config import Settings
from app.pipeline.backend import backend_services
from app.pipeline.worker import Worker
from app.runtime import open_runtime
from app.services.documents import document_states
from app.services.upload import ingest_stream
from app.supervisor import Supervisor
from events.blobs import aiter_bytes

KEY = "bench:annual-report"
MODEL = "local:all-MiniLM-L6-v2"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("revisions", help="a one-paragraph edit of a long document: chunks re-embedded, switch latency")
    p.add_argument("--sections", type=int, default=160, help="sections of the document (160 ≈ 40 pages)")
    p.add_argument("--rounds", type=int, default=3, help="edits, one paragraph each")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def document(sections: int, edited: int | None = None, version: int = 0) -> bytes:
    parts = ["# Annual report of the Harbour Authority\n"]
    for i in range(sections):
        text = (f"Section {i} reviews berth {i % 17}: tonnage handled, dredging done, and the cranes serviced "
                f"during the quarter. The harbour master signed the log of section {i}. ") * 3  # fmt: skip
        if i == edited:
            text = f"Revised in edit {version}: berth {i % 17} closed for {version + 2} days of repairs. " + text
        parts.append(f"## Section {i}\n\n{text}\n")
    return "\n".join(parts).encode()


async def _revision_figures(rt: Any, document_id: str, revision: int) -> dict[str, Any]:
    events = await rt.store.read_stream_all(stream_for(document_id))
    embedded = [e for e in events if e.type == ev.ChunksEmbedded.TYPE and e.data.get("revision") == revision]
    last = embedded[-1].data if embedded else {}
    tokens = int(last.get("tokens", 0))
    chunks = int(last.get("chunk_count", 0))
    reused = int(last.get("reused_count", 0))
    return {"revision": revision, "chunks": chunks, "embedded": chunks - reused, "reused": reused,
            "embed_tokens": tokens}  # fmt: skip


async def _serving(rt: Any, document_id: str, revision: int, timeout: float = 600) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        state = (await document_states(rt.pool, [document_id])).get(document_id)
        if state is not None and state.serving_revision == revision and state.revision == revision:
            return time.perf_counter() - start
        if state is not None and state.status is Status.FAILED:
            raise RuntimeError(f"revision {revision} failed: {state.last_error}")
        await asyncio.sleep(0.02)
    raise TimeoutError(f"revision {revision} was not searchable after {timeout:g} s")


async def run_bench(sections: int, rounds: int) -> dict[str, Any]:
    async with scratch_database("chronos_bench_revisions") as dsn:
        settings = dataclasses.replace(Settings.from_env(), database_url=dsn)
        async with open_runtime(settings) as rt, rt.hub.running():
            worker = Worker(rt, concurrency=2, poll_interval=0.2)
            stop = asyncio.Event()
            task = asyncio.create_task(Supervisor(backend_services(rt, worker)).run(stop))
            try:
                rows = []
                for version in range(rounds + 1):
                    content = document(sections, None if version == 0 else version * 7 % sections, version)
                    start = time.perf_counter()
                    result = await ingest_stream(
                        rt.store, rt.blobs, aiter_bytes(content), filename="annual-report.md", source="bench",
                        actor="bench", key=KEY,
                    )  # fmt: skip
                    await _serving(rt, result.document_id, result.revision)
                    took = time.perf_counter() - start
                    figures = await _revision_figures(rt, result.document_id, result.revision)
                    rows.append({**figures, "upload_to_serving_s": round(took, 3), "bytes": len(content)})
                    print(f"revision {result.revision}: {figures['chunks']} chunks, {figures['embedded']} embedded, "
                          f"{figures['reused']} from the cache, {figures['embed_tokens']:.0f} tokens, "
                          f"searchable in {took:.2f} s", flush=True)  # fmt: skip
            finally:
                stop.set()
                await task
    first, edits = rows[0], rows[1:]
    return {
        "sections": sections,
        "model": MODEL,
        "rounds": rows,
        "baseline_embedded": first["embedded"],
        "edit_embedded_median": statistics.median(r["embedded"] for r in edits) if edits else None,
        "edit_tokens_share": (
            round(statistics.median(r["embed_tokens"] for r in edits) / first["embed_tokens"], 4)
            if edits and first["embed_tokens"]
            else None
        ),
        "edit_switch_s_median": statistics.median(r["upload_to_serving_s"] for r in edits) if edits else None,
        "first_ingest_s": first["upload_to_serving_s"],
    }


async def main(args: argparse.Namespace) -> int:
    out = await run_bench(args.sections, args.rounds)
    if args.json:
        print(orjson.dumps(out).decode())
    else:
        print(f"a one-paragraph edit of a {args.sections}-section document: {out['edit_embedded_median']} of "
              f"{out['baseline_embedded']} chunks embedded again (median of {args.rounds}), "
              f"{out['edit_tokens_share']:.1%} of the first ingest's tokens; "
              f"searchable {out['edit_switch_s_median']:.2f} s after the upload "
              f"(first ingest {out['first_ingest_s']:.2f} s)")  # fmt: skip
    return 0
