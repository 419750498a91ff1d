"""The pipeline end to end with the real stages (local Docling, LlamaIndex, local embedder) on a
real database: intake → convert → chunk → embed, bad input, dedupe, workers in separate processes
killed with SIGKILL mid-conversion."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.pipeline.backend import backend_services
from app.pipeline.worker import Worker
from app.runtime import Runtime
from app.services.documents import document_states
from app.services.upload import IntakeResult, ingest_stream
from app.supervisor import Supervisor
from events import EventStore, PgBlobStore
from events.blobs import aiter_bytes, aiter_file

pytestmark = pytest.mark.local_models

ROOT = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def put_file(rt: Runtime, path: Path, name: str | None = None) -> IntakeResult:
    return await ingest_stream(
        rt.store, rt.blobs, aiter_file(path), filename=name or path.name, source="cli", actor="test"
    )


async def put_bytes(rt: Runtime, data: bytes, name: str) -> IntakeResult:
    return await ingest_stream(rt.store, rt.blobs, aiter_bytes(data), filename=name, source="cli", actor="test")


async def drive(rt: Runtime, ids: list[str], timeout: float = 240) -> dict[str, str]:
    """Run an in-process worker (with its dispatcher) until every document is final; returns {id: status}."""
    stop = asyncio.Event()
    worker = Worker(rt, concurrency=2, poll_interval=0.2)
    task = asyncio.create_task(Supervisor(backend_services(rt, worker, projections=False)).run(stop))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await document_states(rt.pool, ids)
            if len(state) == len(ids) and all(p.final for p in state.values()):
                return {d: p.status for d, p in state.items()}
            await asyncio.sleep(0.3)
        raise AssertionError(f"not final after {timeout}s: {await document_states(rt.pool, ids)}")
    finally:
        stop.set()
        await task


async def types_of(store: EventStore, document_id: str) -> Counter[str]:
    return Counter(e.type for e in await store.read_stream(stream_for(document_id)))


async def test_documents_become_searchable_with_costs(rt: Runtime, corpus: Path) -> None:
    files = [
        corpus / "md" / sorted(p.name for p in (corpus / "md").iterdir())[0],
        corpus / "html" / "example_01.html",
        corpus / "csv" / "csv-comma.csv",
        corpus / "pdf" / sorted(p.name for p in (corpus / "pdf").glob("*.pdf") if "pass" not in p.name)[0],
    ]
    uploads = [await put_file(rt, f) for f in files]
    statuses = await drive(rt, [u.document_id for u in uploads])
    assert set(statuses.values()) == {"searchable"}, statuses
    for u in uploads:
        events = await rt.store.read_stream(stream_for(u.document_id))
        kinds = Counter(e.type for e in events)
        assert kinds[ev.DocumentConverted.TYPE] == 1
        assert kinds[ev.DocumentChunked.TYPE] == 1
        assert kinds[ev.ChunksEmbedded.TYPE] == 1
        costs = [e.data for e in events if e.type == ev.CostIncurred.TYPE]
        assert {c["stage"] for c in costs} == {"convert", "embed"}
        for c in costs:
            assert c["quantity"] > 0 and abs(c["amount_usd"] - c["quantity"] * c["unit_price_usd"]) < 1e-9
        converted = next(e.data for e in events if e.type == ev.DocumentConverted.TYPE)
        assert converted["backend"] == "local" and converted["docling_version"]
        markdown = await rt.blobs.get_bytes(converted["markdown"]["sha256"])
        assert markdown.strip()
        embedded = next(e.data for e in events if e.type == ev.ChunksEmbedded.TYPE)
        vectors = await rt.blobs.get_bytes(embedded["vectors"]["sha256"])
        assert len(vectors) == embedded["chunk_count"] * embedded["dimensions"] * 4


async def test_bad_inputs_end_in_clear_failure_events(rt: Runtime, corpus: Path, tmp_path: Path) -> None:
    pdf = next(p for p in sorted((corpus / "pdf").glob("*.pdf")) if "pass" not in p.name)
    protected = next(p for p in (corpus / "pdf").glob("*.pdf") if "pass" in p.name.lower())
    good = await put_file(rt, corpus / "html" / "example_02.html")
    bad = {
        "empty": await put_bytes(rt, b"", "empty.pdf"),
        "truncated": await put_bytes(rt, pdf.read_bytes()[:2000], "truncated.pdf"),
        "protected": await put_file(rt, protected),
        "lying": await put_bytes(rt, os.urandom(4096), "random.docx"),
        "unsupported": await put_bytes(rt, b"\x89PNG\r\n\x1a\n" + os.urandom(512), "picture.pdf"),
    }
    statuses = await drive(rt, [good.document_id] + [u.document_id for u in bad.values()])
    assert statuses[good.document_id] == "searchable"  # the worker kept going
    state = await document_states(rt.pool, [u.document_id for u in bad.values()])
    for label, upload in bad.items():
        p = state[upload.document_id]
        assert p.status == "failed", (label, p)
        assert p.failure and len(p.failure) > 10, (label, p.failure)
    assert "EmptyFile" in (state[bad["empty"].document_id].failure or "")
    assert "UnsupportedMediaType" in (state[bad["unsupported"].document_id].failure or "")


async def test_same_content_is_the_same_document_unless_forced(rt: Runtime) -> None:
    body = b"# Title\n\nSome words about dedupe.\n"
    first = await put_bytes(rt, body, "a.md")
    again = await put_bytes(rt, body, "b.md")
    assert first.created and not again.created and again.document_id == first.document_id
    forced = await ingest_stream(
        rt.store, rt.blobs, aiter_bytes(body), filename="c.md", source="cli", actor="test", force=True
    )
    assert forced.created and forced.document_id != first.document_id
    assert await rt.pool.fetchval("SELECT count(*) FROM blobs") == 1  # one copy of the bytes


def start_worker(dsn: str, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=dsn, CHRONOS_HOME=str(home))
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--no-projections", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_for(pool: asyncpg.Pool, sql: str, timeout: float, *args: object) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval(sql, *args):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {sql}")


@pytest.mark.slow
async def test_sigkilled_worker_job_completes_without_duplicates(rt: Runtime, corpus: Path, tmp_path: Path) -> None:
    pdfs = [p for p in sorted((corpus / "pdf").glob("*.pdf")) if "pass" not in p.name][:3]
    uploads = [await put_file(rt, p) for p in pdfs]
    ids = [u.document_id for u in uploads]
    victim = start_worker(rt.dsn, tmp_path, "--lease", "4", "--concurrency", "1", "--stages", "convert")
    try:
        running = "SELECT EXISTS (SELECT 1 FROM jobs WHERE stage = 'convert' AND status = 'running')"
        await wait_for(rt.pool, running, 120)
        await asyncio.sleep(0.5)  # well inside the conversion
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_jobs = await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'")
    assert killed_jobs == 1
    survivors = [start_worker(rt.dsn, tmp_path, "--concurrency", "1") for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = await document_states(rt.pool, ids)
            if len(state) == len(ids) and all(p.final for p in state.values()):
                break
            await asyncio.sleep(0.5)
        assert {p.status for p in (await document_states(rt.pool, ids)).values()} == {"searchable"}
    finally:
        for w in survivors:
            w.send_signal(signal.SIGTERM)
        for w in survivors:
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                w.kill()
    for w in survivors:
        assert w.returncode == 0, (w.stdout.read() if w.stdout else b"").decode()[-2000:]
    for doc in ids:
        kinds = await types_of(rt.store, doc)
        assert kinds[ev.DocumentConverted.TYPE] == 1
        assert kinds[ev.DocumentChunked.TYPE] == 1
        assert kinds[ev.ChunksEmbedded.TYPE] == 1
    taken_over = await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE stage = 'convert' AND attempts = 2")
    assert taken_over == 1
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status <> 'done'") == 0
