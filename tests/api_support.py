"""Helpers for the API tests: an app on a test database (ASGI, or uvicorn in a thread), synthetic
stage results so endpoints can be exercised without running Docling."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from starlette.applications import Starlette

from app.api import create_app
from app.api.server import ChronosServer
from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.runtime import Runtime
from events.blobs import PgBlobStore
from events.store import EventStore
from events.types import NewEvent

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(dsn: str, **overrides: Any) -> Settings:
    return replace(Settings(database_url=dsn, api_tokens=(TOKEN,)), **overrides)


@contextlib.asynccontextmanager
async def asgi_client(
    dsn: str, pool: asyncpg.Pool, store: EventStore, **kw: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette, Runtime]]:
    app_kw = {k: kw.pop(k) for k in ("worker_slots", "run_projections") if k in kw}
    rt = Runtime(settings_for(dsn, **kw), dsn, pool, store, PgBlobStore(pool))
    app = create_app(runtime=rt, **app_kw)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://chronos.test") as client:
            yield client, app, rt


async def event_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM events"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """``create_app(settings)`` under a real uvicorn in a thread with its own event loop and runtime."""

    def __init__(self, settings: Settings, **app_kw: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(settings, **app_kw)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=2, lifespan="on"
        )
        self.server = ChronosServer(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def server_thread(settings: Settings, **app_kw: Any) -> Iterator[ServerThread]:
    with ServerThread(settings, **app_kw) as server:
        yield server


@contextlib.contextmanager
def server_process(dsn: str, serve_args: tuple[str, ...] = ("--no-projections",), **env: str) -> Iterator[str]:
    """``chronos serve`` (default: no projections) as a process of its own, answering ``TOKEN``; yields its
    URL. For tests that drive the server from many threads of their own, or that need a real serve
    process beside them: nothing of the server shares this interpreter."""
    root = Path(__file__).resolve().parent.parent
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHRONOS_HOME")}
    environ.update(DATABASE_URL=dsn, CHRONOS_API_TOKENS=TOKEN, **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0", *serve_args],
        cwd=root, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"listening on (http://\S+)/", first)
        assert found, f"chronos serve did not start: {first}{proc.stdout.read() if proc.poll() is not None else ''}"
        url = found.group(1)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "chronos serve did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_until(predicate: Any, timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def fake_conversion(rt: Runtime, document_id: str, markdown: str) -> str:
    """Append a DocumentConverted (Markdown stored in the blob store) as a worker would."""
    ref = await rt.blobs.put_bytes(markdown.encode(), "text/markdown")
    conversion_id = str(uuid.uuid4())
    data = {
        "document_id": document_id,
        "conversion_id": conversion_id,
        "input_sha256": "0" * 64,
        "backend": "local",
        "pipeline": "simple",
        "docling_version": "test",
        "page_count": 1,
        "durations": {"total_s": 0.5, "convert_s": 0.4},
        "docling_json": {"sha256": ref.sha256, "size": ref.size, "media_type": "application/json"},
        "markdown": {"sha256": ref.sha256, "size": ref.size, "media_type": "text/markdown"},
        "settings_hash": "test",
    }
    await rt.store.append(stream_for(document_id), [NewEvent(ev.DocumentConverted.TYPE, data)])
    return conversion_id


async def fake_chunking(rt: Runtime, document_id: str, conversion_id: str, texts: list[str]) -> str:
    chunk_set_id = str(uuid.uuid4())
    chunks = []
    offset = 0
    for i, text in enumerate(texts):
        chunks.append(
            {
                "ordinal": i,
                "text": text,
                "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
                "pages": [1],
                "heading_path": ["Title"],
                "char_start": offset,
                "char_end": offset + len(text),
                "token_count": len(text.split()),
            }
        )
        offset += len(text)
    data = {
        "document_id": document_id,
        "chunk_set_id": chunk_set_id,
        "conversion_id": conversion_id,
        "parameters": {
            "splitter": "test",
            "chunk_size": 256,
            "chunk_overlap": 0,
            "requested_chunk_size": 256,
            "tokenizer": "test",
            "embedder_max_tokens": 256,
        },
        "chunks": chunks,
    }
    await rt.store.append(stream_for(document_id), [NewEvent(ev.DocumentChunked.TYPE, data)])
    return chunk_set_id


async def fake_failure(rt: Runtime, document_id: str, stage: str = "convert", message: str = "broken input") -> None:
    kind = {"convert": ev.ConversionFailed.TYPE, "chunk": ev.ChunkingFailed.TYPE, "embed": ev.EmbeddingFailed.TYPE}
    data = {
        "document_id": document_id,
        "stage": stage,
        "error_class": "BrokenInput",
        "message": message,
        "attempt": 1,
        "retryable": False,
        "final": True,
    }
    await rt.store.append(stream_for(document_id), [NewEvent(kind[stage], data)])


async def fake_cost(rt: Runtime, document_id: str, usd: float, stage: str = "convert") -> None:
    data = {
        "document_id": document_id,
        "stage": stage,
        "provider": "local",
        "resource": "cpu_seconds",
        "quantity": usd / 0.0000131,
        "unit_price_usd": 0.0000131,
        "amount_usd": usd,
        "caused_by": str(uuid.uuid4()),
    }
    await rt.store.append(stream_for(document_id), [NewEvent(ev.CostIncurred.TYPE, data)])
