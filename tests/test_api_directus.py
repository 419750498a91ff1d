"""``POST /hooks/directus`` against a local stand-in for Directus's ``/assets/{id}`` (a real HTTP
server in a thread: 200 with the bytes for the right static token, 401 for a wrong one, 404 for an
unknown file), ingesting with source=directus and the Directus file id."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import asyncpg
import pytest

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from events.store import EventStore
from tests.api_support import AUTH, asgi_client, event_count

DIRECTUS_TOKEN = "directus-static-token"
FILE_ID = "4f5a8c2e-1b3d-4e6f-8a9b-0c1d2e3f4a5b"
CONTENT = b"# Quarterly report\n\nThe orchard delivered forty crates.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
FILES = {FILE_ID: CONTENT, "png-file": b"\x89PNG\r\n\x1a\n" + bytes(200)}


class Standin(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        Standin.requests.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {DIRECTUS_TOKEN}":
            self._json(
                401, b'{"errors":[{"message":"Invalid user credentials.","extensions":{"code":"INVALID_CREDENTIALS"}}]}'
            )
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] != "assets" or parts[1] not in FILES:
            self._json(404, b'{"errors":[{"message":"Route doesn\'t exist.","extensions":{"code":"ROUTE_NOT_FOUND"}}]}')
            return
        body = FILES[parts[1]]
        self.send_response(200)
        self.send_header("Content-Type", "text/markdown; charset=utf-8")
        self.send_header("Content-Disposition", 'inline; filename="report.md"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 16):  # in pieces, like a real download
            self.wfile.write(body[i : i + 16])

    def _json(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        """Keep the test output quiet (no access log)."""


@pytest.fixture
def directus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Standin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Standin.requests.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def webhook(key: str | None = FILE_ID, event: str = "files.upload") -> dict[str, object]:
    return {
        "event": event,
        "collection": "directus_files",
        "key": key,
        "payload": {
            "filename_download": "Q3 report.md",
            "type": "text/markdown",
            "filesize": len(CONTENT),
            "storage": "local",
            "title": "Q3 Report",
        },
    }


async def test_upload_hook_fetches_asset_and_ingests(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: str
) -> None:
    async with asgi_client(dsn, pool, store, directus_url=directus, directus_token=DIRECTUS_TOKEN) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=webhook(), headers=AUTH)
        assert r.status_code == 202, r.text
        (doc,) = r.json()["documents"]
        assert doc["directus_file_id"] == FILE_ID and doc["created"] is True and doc["filename"] == "Q3 report.md"
        assert Standin.requests == [(f"/assets/{FILE_ID}", f"Bearer {DIRECTUS_TOKEN}")]
        events = await store.read_stream(stream_for(doc["document_id"]))
        assert [e.type for e in events] == [ev.DocumentUploaded.TYPE]
        data, metadata = events[0].data, events[0].metadata
        assert data["source"] == "directus" and data["source_ref"] == FILE_ID and data["size"] == len(CONTENT)
        assert metadata["actor"] == "directus" and metadata["correlation_id"] == f"directus:{FILE_ID}"
        stored = await pool.fetchval("SELECT size FROM blobs WHERE sha256 = $1", data["sha256"])
        assert stored == len(CONTENT)

        again = await client.post("/hooks/directus", json=webhook(), headers=AUTH)  # redelivered webhook
        assert again.status_code == 200 and again.json()["documents"][0]["document_id"] == doc["document_id"]
        assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'DocumentUploaded'") == 1

        batch = {"event": "files.upload", "keys": [FILE_ID, "png-file"], "payload": {}}
        r = await client.post("/hooks/directus", json=batch, headers=AUTH)
        assert r.status_code == 200, r.text
        known, png = r.json()["documents"]
        assert known["document_id"] == doc["document_id"] and png["rejected"] is True and "image/png" in png["reason"]


async def test_directus_failures_are_clear_and_record_nothing(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: str
) -> None:
    async with asgi_client(dsn, pool, store, directus_url=directus, directus_token="wrong") as (client, _, _rt):
        r = await client.post("/hooks/directus", json=webhook(), headers=AUTH)
        assert r.status_code == 502 and r.json()["error"]["code"] == "directus_auth_failed"
    async with asgi_client(dsn, pool, store, directus_url=directus, directus_token=DIRECTUS_TOKEN) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=webhook("no-such-file"), headers=AUTH)
        assert r.status_code == 502 and r.json()["error"]["code"] == "directus_not_found"
        r = await client.post("/hooks/directus", json=webhook("png-file"), headers=AUTH)
        assert r.status_code == 415
        r = await client.post("/hooks/directus", json=webhook(event="items.create"), headers=AUTH)
        assert r.status_code == 200 and r.json()["ignored"] is True
        for bad in (webhook(None), webhook("../../etc/passwd"), {"event": "files.upload", "keys": "x"}):
            r = await client.post("/hooks/directus", json=bad, headers=AUTH)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_webhook", bad
        assert (await client.post("/hooks/directus", content=b"[1]", headers=AUTH)).status_code == 400
        assert (await client.post("/hooks/directus", json=webhook())).status_code == 401
    async with asgi_client(dsn, pool, store, directus_url="http://127.0.0.1:9", directus_token="t") as (client, _, _rt):
        r = await client.post("/hooks/directus", json=webhook(), headers=AUTH)
        assert r.status_code == 502 and r.json()["error"]["code"] == "directus_unreachable"
    async with asgi_client(dsn, pool, store) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=webhook(), headers=AUTH)
        assert r.status_code == 503 and r.json()["error"]["code"] == "directus_not_configured"
    assert await event_count(pool) == 0
