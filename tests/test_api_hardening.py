"""The API under a hostile or careless client (issue 11 item 11): slow heads and bodies are timed out,
a client that goes away is not an internal error, ``filename*`` is read, refused uploads store
nothing and say the configured limit, unknown models are refused, a searchable document carries no
old error. Real uvicorn where the transport matters (raw sockets), the ASGI app otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from app.api.server import TimedH11Protocol
from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from events.store import EventStore
from events.types import NewEvent
from projections.runner import catch_up_all
from tests.api_support import AUTH, TOKEN, asgi_client, fake_chunking, fake_conversion, server_thread, settings_for
from tests.test_api_documents import MD, assert_error, upload


class Records(logging.Handler):
    """Every log record of the server thread (uvicorn's loggers do not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            if not any(r is record for r in self.records):  # seen by several of the loggers watched
                self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "app")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    logging.getLogger("app.api").setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        logging.getLogger("app.api").setLevel(logging.NOTSET)


def read_until_closed(sock: socket.socket, limit_s: float = 60.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``limit_s``: then it never did)."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {limit_s:g} s; got {data[:200]!r}") from None
    return data


async def test_slow_loris_heads_are_answered_408_and_closed(
    dsn: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 connections that send part of a request head and then nothing: each gets 408 and is closed
    (before: held for as long as the client liked); the server still answers everyone else."""
    monkeypatch.setattr(TimedH11Protocol, "head_timeout_s", 0.5)
    with server_thread(settings_for(dsn)) as server:
        port = server.port
        socks = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /documents HTTP/1.1\r\nHost: x\r\nX-Filename: a.md\r\n")  # no blank line: never ends
            socks.append(s)
        answers = await asyncio.gather(*(asyncio.to_thread(read_until_closed, s) for s in socks))
        for s in socks:
            s.close()
        assert all(a.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in a for a in answers), answers[0]
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_a_stalled_body_is_answered_408(dsn: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.api.limits.BODY_TIMEOUT_S", 0.5)
    with server_thread(settings_for(dsn)) as server:
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(
            b"POST /documents HTTP/1.1\r\nHost: x\r\nX-Filename: a.md\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Length: 100000\r\n\r\n# A title\n\nten bytes"
        )
        answer = read_until_closed(s)
        s.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"nothing arrived for 0.5 s" in answer, answer
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 0


async def test_a_client_that_disconnects_mid_upload_is_no_internal_error(
    dsn: str, pool: asyncpg.Pool, records: Records
) -> None:
    """Before: each disconnect was logged as a 500 with two tracebacks (the app's and uvicorn's)."""
    with server_thread(settings_for(dsn)) as server:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(
                b"POST /documents HTTP/1.1\r\nHost: x\r\nX-Filename: a.md\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: 100000\r\n\r\n"
                + b"# words\n" * 100
            )
            await asyncio.sleep(0.2)  # the app is reading the body
            s.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with records.guard:
                gone = [r for r in records.records if r.getMessage() == "client disconnected mid-request"]
            if len(gone) == 3:
                break
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).status_code == 200
    with records.guard:
        bad = [r for r in records.records if r.levelno >= logging.WARNING or r.exc_info]
        gone = [r for r in records.records if r.getMessage() == "client disconnected mid-request"]
    assert not bad, [(r.name, r.levelname, r.getMessage()) for r in bad]
    assert len(gone) == 3 and all(r.levelno == logging.INFO for r in gone)
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


async def test_filename_star_is_read(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    """RFC 5987 ``filename*`` wins over ``filename`` (RFC 6266), in a multipart part and in the
    request's own Content-Disposition; before, both were ignored (the multipart parser drops them)."""
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="rates.md"; '
                b"filename*=UTF-8''%E2%82%AC%20rates.md\r\nContent-Type: text/markdown\r\n\r\n"
                + MD + b"\r\n--xyz--\r\n")  # fmt: skip
        r = await client.post("/documents", content=body,
                              headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"})  # fmt: skip
        assert r.status_code == 202, r.text
        assert r.json()["filename"] == "€ rates.md"
        r = await client.post(
            "/documents",
            content=MD + b"\nanother\n",
            headers={**AUTH, "Content-Disposition": "attachment; filename*=utf-8''caf%C3%A9%20notes.md"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["filename"] == "café notes.md"
        r = await client.post(
            "/documents",
            content=MD + b"\nthird\n",
            headers={**AUTH, "Content-Disposition": "attachment; filename*=iso-8859-1'en'%A3%20prices.md"},
        )
        assert r.json()["filename"] == "£ prices.md"


async def test_a_refused_upload_stores_nothing(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    """The 415 is decided from the first bytes: the body is not stored first (before: a published blob
    nothing referenced, kept until gc)."""
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        elf = b"\x7fELF\x02\x01\x01" + os.urandom(3 * 1024 * 1024)
        assert_error(await upload(client, elf, name="tool.md"), 415, "unsupported_media_type")
        assert_error(await upload(client, b"", name="empty.md"), 400, "empty_upload")
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 0
    assert await pool.fetchval("SELECT count(*) FROM blob_chunks") == 0
    assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 0


async def test_every_413_states_the_configured_limit(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store, max_upload_bytes=4096, max_body_bytes=1024) as (client, _app, _rt):
        # A multipart body whose framing (a large other field first) passes the allowance while the
        # file itself is small: the middleware refuses it; its message said 69632 (4096 + the allowance).
        filler = b"x" * (70 * 1024)

        async def body() -> AsyncIterator[bytes]:
            yield b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + filler + b"\r\n"
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n' + MD
            yield b"\r\n--xyz--\r\n"

        r = await client.post("/documents", content=body(),
                              headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"})  # fmt: skip
        message = assert_error(r, 413, "payload_too_large")["error"]["message"]
        assert "limit of 4096 bytes (CHRONOS_MAX_UPLOAD_BYTES)" in message, message

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"word " * 200

        for r in (
            await upload(client, b"# big\n\n" + b"word " * 2000),
            await client.post(
                "/documents", content=b"# big\n\n" + b"word " * 2000, headers={**AUTH, "X-Filename": "big.md"}
            ),
            await client.post("/documents", content=chunked(), headers={**AUTH, "X-Filename": "big.md"}),
        ):
            message = assert_error(r, 413, "payload_too_large")["error"]["message"]
            assert "limit of 4096 bytes (CHRONOS_MAX_UPLOAD_BYTES)" in message, message
        doc = (await upload(client, MD)).json()["document_id"]
        r = await client.post(f"/documents/{doc}/reprocess", content=b"{" + b" " * 5000 + b"}", headers=AUTH)
        message = assert_error(r, 413, "payload_too_large")["error"]["message"]
        assert "limit of 1024 bytes (CHRONOS_API_MAX_BODY_BYTES)" in message, message


async def test_reprocess_with_an_unknown_model_is_a_400(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        doc = (await upload(client, MD)).json()["document_id"]
        before = await pool.fetchval("SELECT count(*) FROM events")
        for model in ("bogus:model", "local:no-such-model", "text-embedding-9-huge"):
            r = await client.post(f"/documents/{doc}/reprocess", json={"stage": "embed", "model": model},
                                  headers=AUTH)  # fmt: skip
            assert_error(r, 400)
        assert await pool.fetchval("SELECT count(*) FROM events") == before  # nothing requested, nothing sticks


async def _embedded(store: EventStore, rt: Any, document_id: str, chunk_set_id: str, chunks: int) -> None:
    vectors = np.zeros((chunks, 384), dtype=np.float32)
    vectors[:, 0] = 1.0
    ref = await rt.blobs.put_bytes(vectors.tobytes(), "application/x-float32")
    data = {"document_id": document_id, "chunk_set_id": chunk_set_id, "model": "local:all-MiniLM-L6-v2",
            "provider": "local", "dimensions": 384, "chunk_count": chunks,
            "vectors": {"sha256": ref.sha256, "size": ref.size, "media_type": "application/x-float32"}}  # fmt: skip
    await store.append(stream_for(document_id), [NewEvent(ev.ChunksEmbedded.TYPE, data)])


async def test_a_searchable_document_keeps_no_old_error(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    """A conversion that failed once (retryable) and then worked: the document is searchable and its
    last_error is gone, in the API and in the documents table."""
    async with asgi_client(dsn, pool, store) as (client, _app, rt):
        doc = (await upload(client, MD)).json()["document_id"]
        failed = {"document_id": doc, "stage": "convert", "error_class": "Timeout", "message": "took too long",
                  "attempt": 1, "retryable": True, "final": False}  # fmt: skip
        await store.append(stream_for(doc), [NewEvent(ev.ConversionFailed.TYPE, failed)])
        await catch_up_all(pool, dsn)
        assert (await client.get(f"/documents/{doc}", headers=AUTH)).json()["last_error"] == "took too long"
        conversion = await fake_conversion(rt, doc, MD.decode())
        chunk_set = await fake_chunking(rt, doc, conversion, ["The lantern in the harbour.", "one two"])
        await _embedded(store, rt, doc, chunk_set, 2)
        await catch_up_all(pool, dsn)
        body = (await client.get(f"/documents/{doc}", headers=AUTH)).json()
    assert body["status"] == "searchable" and body["last_error"] is None and body["error_class"] is None
    row = await pool.fetchrow("SELECT status, last_error, error_class FROM documents WHERE document_id = $1::uuid",
                              doc)  # fmt: skip
    assert row is not None and dict(row) == {"status": "searchable", "last_error": None, "error_class": None}
