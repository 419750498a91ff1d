"""Fault-suite harness: real worker processes ingesting generated documents while faults are injected.

A scenario uploads documents into its own embedded PostgreSQL (CHRONOS_HOME in a temp dir, so the
server can be stopped and started like a real one), runs `chronos worker` processes, injects its
fault, and then verifies the outcome with ``verify``: every document final (searchable, or failed
with a reason), no duplicated result or cost, log integrity (``chronos check``), and projections
equal to what a fresh replay produces.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.catalogue.state import FINAL
from app.check import run_checks
from app.config import Settings
from app.db import resolve_dsn
from app.runtime import Runtime, open_runtime
from app.services.documents import document_states
from app.services.upload import ingest_stream
from events.blobs import aiter_bytes
from projections.runner import catch_up_all

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("CHRONOS_FAULTS_LONG") == "1"
DOCS = int(os.environ.get("CHRONOS_FAULTS_DOCS") or (300 if LONG else 16))
TIMEOUT = 2400 if LONG else 600
RESULTS = Path(__file__).resolve().parent / "last_results.json"
PDFS = ("multi_page.pdf", "normal_4pages.pdf", "2305.03393v1-pg9.pdf", "right_to_left_01.pdf")

WORDS = [
    "ledger",
    "invoice",
    "turbine",
    "glacier",
    "orchid",
    "harbor",
    "quantum",
    "saffron",
    "meadow",
    "copper",
    "lantern",
    "violet",
    "canyon",
    "falcon",
    "ember",
    "prism",
    "willow",
    "basalt",
    "cobalt",
    "tundra",
    "nebula",
    "juniper",
    "marble",
    "zephyr",
]


def make_document(i: int, rng: random.Random) -> tuple[str, bytes]:
    """A small unique document: Markdown, HTML or CSV, a few paragraphs."""
    kind = i % 3
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    if kind == 0:
        body = f"# Report {i}\n\n" + "\n\n".join(f"## Part {p}\n\n{words(60)} (doc {i})." for p in range(3))
        return f"doc-{i}.md", body.encode()
    if kind == 1:
        paras = "".join(f"<h2>Section {p}</h2><p>{words(50)} (doc {i}).</p>" for p in range(3))
        return f"doc-{i}.html", f"<html><body><h1>Page {i}</h1>{paras}</body></html>".encode()
    rows = "\n".join(f"{r},{rng.choice(WORDS)},{rng.randint(1, 999)},doc {i}" for r in range(20))
    return f"doc-{i}.csv", f"id,name,value,note\n{rows}\n".encode()


@dataclass
class Scenario:
    home: Path
    documents: int
    env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    faults: int = 0
    logs: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    extra_batches: int = 0  # batches uploaded to reach the minimum of faults (wait_final's ``until``)

    @property
    def settings(self) -> Settings:
        return Settings(home=self.home)

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "OPENAI_API_KEY")}
        env.update(CHRONOS_HOME=str(self.home), PYTHONUNBUFFERED="1")
        env.update(self.env)
        return env

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = self.home / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--lease", "6", "--concurrency", "2", *extra],
            cwd=ROOT,
            env=self.worker_env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def kill_random_worker(self, rng: random.Random) -> bool:
        alive = self.alive()
        if not alive:
            return False
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.faults += 1
        return True

    def stop_workers(self, timeout: float = 60) -> None:
        for w in self.alive():
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(timeout)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(10)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=self.worker_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def tail_logs(self, n: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in self.logs if p.exists())


def record(name: str, figures: dict[str, Any], scenario: Scenario | None = None) -> None:
    """Keep the figures of the last run (for the closing note); printed with -s as well."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    figures = {"form": "long" if LONG else "quick", **figures}
    if scenario is not None:
        figures["seconds"] = round(time.monotonic() - scenario.started)
    data[name] = figures
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(name, figures)


async def upload_documents(scenario: Scenario, seed: int = 7, count: int | None = None) -> list[str]:
    """Upload ``count`` (default: the scenario's) generated documents, numbered after those uploaded."""
    rng = random.Random(seed + len(scenario.ids))
    first = len(scenario.ids)
    async with open_runtime(scenario.settings) as rt:
        for i in range(first, first + (scenario.documents if count is None else count)):
            name, body = make_document(i, rng)
            result = await ingest_stream(
                rt.store, rt.blobs, aiter_bytes(body), filename=name, source="faults", actor="faults"
            )
            scenario.ids.append(result.document_id)
    return scenario.ids[first:]


async def upload_files(scenario: Scenario, paths: list[Path]) -> list[str]:
    """Upload real files as well (e.g. corpus PDFs, the only documents that go to Modal)."""
    ids = []
    async with open_runtime(scenario.settings) as rt:
        for path in paths:
            result = await ingest_stream(
                rt.store, rt.blobs, aiter_bytes(path.read_bytes()), filename=path.name, source="faults", actor="faults"
            )
            ids.append(result.document_id)
    scenario.ids.extend(ids)
    return ids


async def wait_final(
    scenario: Scenario, timeout: float, tick: Any = None, until: Callable[[], bool] | None = None
) -> dict[str, str]:
    """Poll until every document is final; ``tick`` (async, gets elapsed seconds) injects faults meanwhile.

    ``until``: the scenario's minimum of faults. While it is not reached when every document is final,
    more documents are uploaded (a batch of a quarter of the scenario's, at least 4) and the run goes
    on, so a fast machine gets as many faults as a slow one."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    state: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            async with open_runtime(scenario.settings, max_size=2) as rt:
                while time.monotonic() < deadline:
                    prog = await document_states(rt.pool, scenario.ids)
                    state = {d: p.status for d, p in prog.items()}
                    if len(state) == len(scenario.ids) and all(p.final for p in prog.values()):
                        if until is None or until():
                            return state
                        scenario.extra_batches += 1
                        await upload_documents(scenario, count=max(4, scenario.documents // 4))
                        continue
                    if tick is not None:
                        await tick(time.monotonic() - started)
                    await asyncio.sleep(0.5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(1)  # the database is being restarted by the scenario
    counts: dict[str, int] = {}
    for s in state.values():
        counts[s] = counts.get(s, 0) + 1
    raise AssertionError(f"not every document final after {timeout:.0f}s: {counts}\n{scenario.tail_logs()}")


async def wait_quiet(scenario: Scenario, timeout: float, tick: Any = None) -> dict[str, str]:
    """``wait_final``, then until no work is left: every event seen by the dispatcher and no job queued
    or running, twice in a row (a reprocessed document is final before and after its new work)."""
    deadline = time.monotonic() + timeout
    state = await wait_final(scenario, timeout, tick)
    calm = 0
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(await server_dsn(scenario))
            try:
                busy = await conn.fetchval(
                    """SELECT (SELECT coalesce(max(position), 0) FROM events)
                              > (SELECT coalesce(max(position), 0) FROM subscriptions WHERE name = 'dispatcher')
                           OR EXISTS (SELECT 1 FROM jobs WHERE status IN ('queued', 'running'))"""
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            busy = True
        calm = 0 if busy else calm + 1
        if calm >= 2:
            return await wait_final(scenario, max(1.0, deadline - time.monotonic()), tick)
        if tick is not None:
            await tick(time.monotonic() - started)
        await asyncio.sleep(0.5)
    raise AssertionError(f"work still queued after {timeout:.0f}s: {state}\n{scenario.tail_logs()}")


async def running_job_owners(dsn: str, stage: str | None = None) -> set[int]:
    """Pids of workers holding a job (of ``stage``) right now (owner ``worker:<host>:<pid>``)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT lease_owner FROM jobs WHERE status = 'running' AND ($1::text IS NULL OR stage = $1)", stage
        )
    finally:
        await conn.close()
    return {int(r["lease_owner"].rsplit(":", 1)[1]) for r in rows if r["lease_owner"]}


async def projection_fingerprint(rt: Runtime) -> dict[str, str]:
    """A content hash per projection table, independent of physical row order."""
    out: dict[str, str] = {}
    for table in ("documents", "chunks", "vectors", "cost_ledger"):
        out[table] = await rt.pool.fetchval(
            f"SELECT md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) FROM {table} t"
        )
    return out


async def projection_rows(rt: Runtime, table: str) -> set[str]:
    return {r[0] for r in await rt.pool.fetch(f"SELECT t::text FROM {table} t")}


async def verify(scenario: Scenario, *, reworked: bool = False) -> dict[str, Any]:
    """Everything the fault suite promises, checked after a scenario; returns figures for the report.

    ``reworked``: the scenario reprocessed, revised or deleted and re-uploaded documents, so a stream
    may hold several results of a stage (one per request)."""
    async with open_runtime(scenario.settings) as rt:
        prog = await document_states(rt.pool, scenario.ids)
        statuses = {d: p.status for d, p in prog.items()}
        assert len(statuses) == len(scenario.ids)
        assert all(s in tuple(s.value for s in FINAL) for s in statuses.values()), statuses
        failed = {d: p.failure for d, p in prog.items() if p.status == "failed"}
        assert all(reason for reason in failed.values()), failed
        # The workers are stopped: bring the projections to the head before checking them and
        # comparing them with a fresh replay.
        await catch_up_all(rt.pool, rt.dsn)
        report = await run_checks(rt.pool)
        assert not report.errors, [f.to_json() for f in report.errors]
        if not reworked:
            # No stage result recorded twice (one conversion, one chunk set, one vector set per model).
            per_doc = await rt.pool.fetch(
                """SELECT stream_id, type, data ->> 'model' AS model, count(*) AS n FROM events
                   WHERE type IN ('DocumentConverted', 'DocumentChunked', 'ChunksEmbedded')
                   GROUP BY stream_id, type, data ->> 'model' HAVING count(*) > 1"""
            )
            assert not per_doc, [dict(r) for r in per_doc]
        # Documents reworked (reprocessed, revised, deleted and uploaded again) have several results per
        # stage, but still one result per request (per model: a new chunk set embedded while a model
        # switch is in progress gets one ChunksEmbedded for the document's model and one for the switch
        # target, both caused by its one embed request), and a stream never holds the same chunk set twice.
        per_cause = await rt.pool.fetch(
            """SELECT stream_id, type, metadata ->> 'causation_id' AS cause, data ->> 'model' AS model,
                      count(*) AS n FROM events
               WHERE type IN ('DocumentConverted', 'DocumentChunked', 'ChunkingUnchanged', 'ChunksEmbedded')
               GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"""
        )
        assert not per_cause, [dict(r) for r in per_cause]
        per_set = await rt.pool.fetch(
            """SELECT stream_id, data ->> 'chunk_set_id' AS chunk_set_id, count(*) AS n FROM events
               WHERE type = 'DocumentChunked' GROUP BY 1, 2 HAVING count(*) > 1"""
        )
        assert not per_set, [dict(r) for r in per_set]
        blind = await rt.pool.fetch(
            """SELECT d.document_id FROM documents d WHERE d.status = 'searchable' AND NOT EXISTS
               (SELECT 1 FROM chunks c JOIN vectors v USING (chunk_id) WHERE c.document_id = d.document_id)"""
        )
        assert not blind, f"searchable documents without vectors: {[str(r[0]) for r in blind]}"
        # One chunk set per document; after a model switch one per (document, model): each model's
        # search is served by the set that model has vectors of (projections/index.py).
        dup_chunks = await rt.pool.fetchval(
            "SELECT count(*) FROM (SELECT document_id, ordinal FROM chunks GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        models = await rt.pool.fetchval("SELECT count(*) FROM embedding_models")
        assert dup_chunks == 0 or (reworked and models > 1), dup_chunks
        mixed = await rt.pool.fetchval(
            """SELECT count(*) FROM (SELECT c.document_id, v.model FROM vectors v JOIN chunks c USING (chunk_id)
               GROUP BY 1, 2 HAVING count(DISTINCT c.chunk_set_id) > 1) d"""
        )
        assert mixed == 0, f"{mixed} (document, model) pairs answer from two chunk sets"
        dup_vectors = await rt.pool.fetchval(
            "SELECT count(*) FROM (SELECT chunk_id, model FROM vectors GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        assert dup_vectors == 0
        # A cost is paid once per result: never two CostIncurred for the same result and resource.
        dup_costs = await rt.pool.fetchval(
            """SELECT count(*) FROM (SELECT data ->> 'caused_by', data ->> 'resource' FROM events
               WHERE type = 'CostIncurred' GROUP BY 1, 2 HAVING count(*) > 1) d"""
        )
        assert dup_costs == 0
        assert await rt.pool.fetchval("SELECT count(*) - count(DISTINCT event_id) FROM cost_ledger") == 0
        before = await projection_fingerprint(rt)
        documents_before = await projection_rows(rt, "documents")
    replay = scenario.cli("replay", "--all")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    async with open_runtime(scenario.settings) as rt:
        after = await projection_fingerprint(rt)
        documents_after = await projection_rows(rt, "documents")
    differ = {
        "documents only live": sorted(documents_before - documents_after)[:3],
        "documents only replayed": sorted(documents_after - documents_before)[:3],
    }
    assert before == after, {"before": before, "after": after, **differ}
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    return {
        "documents": len(statuses),
        "faults": scenario.faults,
        "final_states": counts,
        "duplicates": 0,
        "extra_batches": scenario.extra_batches,
    }


@contextmanager
def black_hole() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a service that hangs); yields its URL."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def refused_url() -> str:
    """A local URL nothing listens on (a service that is unreachable)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def server_dsn(scenario: Scenario) -> str:
    return await resolve_dsn(scenario.settings)
