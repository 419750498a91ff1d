"""``POST /hooks/directus`` against the Directus 12 stand-in (tests/directus_standin.py): the file's record
and bytes are fetched with the static token and ingested with source=directus and the file id; every
Directus failure is a clear error that records nothing."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from events.store import EventStore
from tests import directus_standin
from tests.api_support import AUTH, asgi_client, event_count

FILE_ID = "4f5a8c2e-1b3d-4e6f-8a9b-0c1d2e3f4a5b"
CONTENT = b"# Quarterly report\n\nThe orchard delivered forty crates.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


@pytest.fixture
def directus() -> Iterator[directus_standin.Directus]:
    with directus_standin.running() as d:
        yield d


async def test_upload_hook_fetches_asset_and_ingests(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: directus_standin.Directus
) -> None:
    token = directus_standin.TOKEN
    hook = directus.upload(FILE_ID, CONTENT, "Q3 report.md")
    directus.upload("png-file", PNG, "logo.png", "image/png")
    async with asgi_client(dsn, pool, store, directus_url=directus.url, directus_token=token) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 202, r.text
        (doc,) = r.json()["documents"]
        assert doc["directus_file_id"] == FILE_ID and doc["created"] is True and doc["filename"] == "Q3 report.md"
        assert [p.split("?")[0] for _m, p in directus.requests] == [f"/files/{FILE_ID}", f"/assets/{FILE_ID}"]
        events = await store.read_stream(stream_for(doc["document_id"]))
        assert [e.type for e in events] == [ev.DocumentUploaded.TYPE]
        data, metadata = events[0].data, events[0].metadata
        assert data["source"] == "directus" and data["source_ref"] == FILE_ID and data["size"] == len(CONTENT)
        assert metadata["actor"].startswith("directus via ") and metadata["correlation_id"] == f"directus:{FILE_ID}"
        stored = await pool.fetchval("SELECT size FROM blobs WHERE sha256 = $1", data["sha256"])
        assert stored == len(CONTENT)

        again = await client.post("/hooks/directus", json=hook, headers=AUTH)  # a redelivered webhook
        assert again.status_code == 200 and again.json()["documents"][0]["document_id"] == doc["document_id"]
        assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'DocumentUploaded'") == 1

        batch = {"event": "files.update", "keys": [FILE_ID, "png-file"], "payload": {"title": "x"}}
        r = await client.post("/hooks/directus", json=batch, headers=AUTH)
        assert r.status_code == 200, r.text
        known, png = r.json()["documents"]
        assert known["document_id"] == doc["document_id"] and png["rejected"] is True and "image/png" in png["reason"]


async def test_directus_failures_are_clear_and_record_nothing(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: directus_standin.Directus
) -> None:
    hook = directus.upload(FILE_ID, CONTENT, "Q3 report.md")
    png = directus.upload("png-file", PNG, "logo.png", "image/png")
    async with asgi_client(dsn, pool, store, directus_url=directus.url, directus_token="wrong") as (client, _, _rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 502 and r.json()["error"]["code"] == "directus_auth_failed"
    token = directus_standin.TOKEN
    async with asgi_client(dsn, pool, store, directus_url=directus.url, directus_token=token) as (client, _, _rt):
        r = await client.post("/hooks/directus", json={**hook, "key": "no-such-file"}, headers=AUTH)
        assert r.status_code == 502 and r.json()["error"]["code"] == "directus_file_missing"
        r = await client.post("/hooks/directus", json=png, headers=AUTH)
        assert r.status_code == 415
        r = await client.post("/hooks/directus", json={**hook, "event": "items.create"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["ignored"] is True
        for bad in ({**hook, "key": None}, {**hook, "key": "../../etc/passwd"}, {"event": "files.upload", "keys": "x"}):
            r = await client.post("/hooks/directus", json=bad, headers=AUTH)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_webhook", bad
        assert (await client.post("/hooks/directus", content=b"[1]", headers=AUTH)).status_code == 422
        assert (await client.post("/hooks/directus", json=hook)).status_code == 401
    async with asgi_client(dsn, pool, store, directus_url="http://127.0.0.1:9", directus_token="t") as (client, _, _rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 502 and r.json()["error"]["code"] == "directus_unavailable"
    directus.down = True
    async with asgi_client(dsn, pool, store, directus_url=directus.url, directus_token=token) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 502 and "503" in r.json()["error"]["message"]
    async with asgi_client(dsn, pool, store) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 503 and r.json()["error"]["code"] == "directus_not_configured"
    assert await event_count(pool) == 0
