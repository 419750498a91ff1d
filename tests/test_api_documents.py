"""The HTTP API through httpx against the ASGI app on a real database: uploads (multipart, raw,
streamed), dedupe, idempotency, limits, listing, document detail, events, Markdown, chunks,
reprocess, delete, error shape. Stage results are appended directly (no Docling here); the real
pipeline (and search with real hits) runs in tests/test_api_dashboard.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from app.catalogue import events as ev
from events.store import EventStore
from projections.runner import catch_up_all
from tests.api_support import (
    AUTH,
    asgi_client,
    event_count,
    fake_chunking,
    fake_conversion,
    fake_cost,
    fake_failure,
)

MD = b"# Harbour ledger\n\nThe lantern in the harbour was lit at dusk.\n\n- one\n- two\n"


def md(i: int) -> bytes:
    return MD + f"\nDocument number {i}.\n".encode()


async def upload(client: httpx.AsyncClient, data: bytes, name: str = "notes.md", **headers: str) -> httpx.Response:
    return await client.post("/documents", files={"file": (name, data, "text/markdown")}, headers={**AUTH, **headers})


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code:
        assert body["error"]["code"] == code, body
    return body


async def test_upload_multipart_then_same_content_raw(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        first = await upload(client, MD)
        assert first.status_code == 202, first.text
        body = first.json()
        assert body["created"] is True and body["filename"] == "notes.md" and body["media_type"] == "text/markdown"
        assert first.headers["location"] == f"/documents/{body['document_id']}"
        again = await client.post("/documents", content=MD, headers={**AUTH, "X-Filename": "copy.md"})
        assert again.status_code == 200 and again.json()["document_id"] == body["document_id"]
        assert again.json()["created"] is False
        uploads = await pool.fetchval("SELECT count(*) FROM events WHERE type = 'DocumentUploaded'")
        assert uploads == 1
        event = await pool.fetchrow("SELECT data, metadata FROM events WHERE type = 'DocumentUploaded'")
        assert event is not None
        assert event["data"]["source"] == "api" and event["metadata"]["actor"].startswith("token:env:")


async def test_streamed_chunked_upload_and_percent_encoded_name(
    dsn: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(50):
            yield f"## Part {i}\n\nParagraph about the quarry and the beacon, line {i}.\n\n".encode()

    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        r = await client.post("/documents", content=pieces(), headers={**AUTH, "X-Filename": "r%C3%A9sum%C3%A9.md"})
        assert r.status_code == 202, r.text
        assert r.json()["filename"] == "résumé.md"
        assert r.json()["size"] == sum(
            len(f"## Part {i}\n\nParagraph about the quarry and the beacon, line {i}.\n\n") for i in range(50)
        )


async def test_filenames_are_never_paths(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        r = await upload(client, md(1), name="../../etc/passwd.md")
        assert r.status_code == 202 and r.json()["filename"] == "passwd.md"
        r = await client.post("/documents", content=md(2), headers={**AUTH, "X-Filename": "..%2F..%2Fboot.md"})
        assert r.json()["filename"] == "boot.md"
        r = await client.post("/documents", content=md(3), headers={**AUTH, "X-Filename": "C:%5Cwin%5Cx.md%00"})
        assert r.json()["filename"] == "x.md"


async def test_idempotency_key(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        a = await upload(client, md(1), **{"Idempotency-Key": "k-1"})
        b = await upload(client, md(1), **{"Idempotency-Key": "k-1"})
        assert a.status_code == 202 and b.status_code == 200
        assert a.json()["document_id"] == b.json()["document_id"]
        before = await event_count(pool)
        assert_error(await upload(client, md(2), **{"Idempotency-Key": "k-1"}), 409, "idempotency_conflict")
        assert await event_count(pool) == before
        assert_error(await upload(client, md(3), **{"Idempotency-Key": "x" * 300}), 400, "invalid_idempotency_key")


async def test_rejections_record_nothing(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store, max_upload_bytes=4096) as (client, _app, _rt):
        elf = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 4
        assert_error(await upload(client, elf, name="tool.md"), 415, "unsupported_media_type")
        assert_error(await upload(client, b"", name="empty.md"), 400, "empty_upload")
        big = b"# big\n\n" + b"word " * 2000
        assert_error(await upload(client, big), 413, "payload_too_large")  # multipart, counted while streaming
        r = await client.post("/documents", content=big, headers={**AUTH, "X-Filename": "big.md"})
        assert_error(r, 413, "payload_too_large")  # refused by Content-Length before reading

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"word " * 200

        r = await client.post("/documents", content=chunked(), headers={**AUTH, "X-Filename": "big.md"})
        assert_error(r, 413, "payload_too_large")
        r = await client.post("/documents", files={"other": ("a.md", MD)}, headers=AUTH)
        assert_error(r, 400, "bad_request")
        r = await client.post(
            "/documents",
            content=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n# hi',
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert_error(r, 400, "bad_request")  # the body ends inside the file part
        assert await event_count(pool) == 0
        assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 0


async def test_list_documents_status_filter_and_cursor(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, rt):
        ids = [(await upload(client, md(i), name=f"d{i}.md")).json()["document_id"] for i in range(5)]
        await fake_failure(rt, ids[0])
        await catch_up_all(pool, dsn)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/documents", params=params)).json()
            seen += [d["document_id"] for d in page["documents"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == 5
        failed = (await client.get("/documents", params={"status": "failed"})).json()["documents"]
        assert [d["document_id"] for d in failed] == [ids[0]]
        assert failed[0]["last_error"] == "broken input" and failed[0]["failed_stage"] == "convert"
        both = (await client.get("/documents", params={"status": "failed,uploaded"})).json()["documents"]
        assert len(both) == 5
        assert_error(await client.get("/documents", params={"status": "nope"}), 400, "invalid_parameter")
        assert_error(await client.get("/documents", params={"cursor": "%%%"}), 400, "invalid_cursor")
        assert_error(await client.get("/documents", params={"limit": "0"}), 400, "invalid_parameter")


async def test_document_detail_markdown_chunks_events(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, rt):
        doc = (await upload(client, MD)).json()["document_id"]
        detail = (await client.get(f"/documents/{doc}")).json()  # read from the log: no projection lag
        assert detail["status"] == "uploaded"
        assert [s["stage"] for s in detail["stages"]] == ["convert", "chunk", "embed"]
        assert detail["stages"][0]["status"] == "queued" and detail["stages"][1]["status"] == "pending"
        assert_error(await client.get(f"/documents/{doc}/markdown"), 409, "not_ready")

        conversion = await fake_conversion(rt, doc, "# Harbour\n\nConverted text.\n")
        await fake_chunking(rt, doc, conversion, ["Converted text.", "Second chunk."])
        await fake_cost(rt, doc, 0.25)
        await catch_up_all(pool, dsn)
        detail = (await client.get(f"/documents/{doc}")).json()
        assert detail["status"] == "chunked" and detail["chunk_count"] == 2
        convert, chunk, embed = detail["stages"]
        assert convert["status"] == "done" and convert["duration_s"] >= 0 and convert["details"]["backend"] == "local"
        assert chunk["status"] == "done" and embed["status"] == "queued"
        assert detail["costs"]["total_usd"] == pytest.approx(0.25) and detail["costs"]["by_stage"] == {"convert": 0.25}
        md_response = await client.get(f"/documents/{doc}/markdown")
        assert md_response.status_code == 200 and md_response.text == "# Harbour\n\nConverted text.\n"
        assert md_response.headers["content-type"].startswith("text/markdown")
        chunks = (await client.get(f"/documents/{doc}/chunks", params={"limit": "1"})).json()
        assert [c["text"] for c in chunks["chunks"]] == ["Converted text."] and chunks["next_after"] == 0
        rest = (await client.get(f"/documents/{doc}/chunks", params={"after": "0"})).json()
        assert [c["ordinal"] for c in rest["chunks"]] == [1] and rest["next_after"] is None
        events = (await client.get(f"/documents/{doc}/events")).json()["events"]
        assert [e["type"] for e in events] == [
            ev.DocumentUploaded.TYPE,
            ev.DocumentConverted.TYPE,
            ev.DocumentChunked.TYPE,
            ev.CostIncurred.TYPE,
        ]
        assert events[0]["data"]["filename"] == "notes.md"
        summary = (await client.get(f"/documents/{doc}/events", params={"data": "summary", "after_version": 2})).json()
        assert [e["stream_version"] for e in summary["events"]] == [3, 4] and "chunks" not in summary["events"][0][
            "data"
        ]

        missing = "00000000-0000-0000-0000-000000000000"
        for path in ("", "/events", "/markdown", "/chunks"):
            assert_error(await client.get(f"/documents/{missing}{path}"), 404, "not_found")
            assert_error(await client.get(f"/documents/not-a-uuid{path}"), 400, "invalid_document_id")


async def test_reprocess_and_delete(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, rt):
        doc = (await upload(client, MD)).json()["document_id"]
        await fake_failure(rt, doc, "chunk")
        r = await client.post(f"/documents/{doc}/reprocess", headers=AUTH)
        assert r.status_code == 202 and r.json()["stage"] == "chunk"  # defaults to the failed stage
        r = await client.post(
            f"/documents/{doc}/reprocess", json={"stage": "convert", "backend": "local"}, headers=AUTH
        )
        assert r.status_code == 202
        requests = await pool.fetch(
            "SELECT type, data, metadata FROM events WHERE type LIKE '%Requested' ORDER BY position"
        )
        assert [e["type"] for e in requests] == [ev.ChunkingRequested.TYPE, ev.ConversionRequested.TYPE]
        assert all(e["metadata"]["actor"].startswith("token:env:") for e in requests)
        assert requests[1]["data"]["backend"] == "local"
        assert_error(await client.post(f"/documents/{doc}/reprocess", json={"stage": "x"}, headers=AUTH), 400)
        assert_error(await client.post(f"/documents/{doc}/reprocess", json={"stage": "embed"}, headers=AUTH), 400)
        r = await client.post(f"/documents/{doc}/reprocess", content=b"{nope", headers=AUTH)
        assert_error(r, 400, "invalid_json")
        r = await client.post(f"/documents/{doc}/reprocess", json={"chunk_size": "big"}, headers=AUTH)
        assert_error(r, 400, "invalid_parameter")

        conversion = await fake_conversion(rt, doc, "# x\n")
        assert conversion
        r = await client.request("DELETE", f"/documents/{doc}", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"document_id": doc, "deleted": True, "already_deleted": False}
        again = await client.request("DELETE", f"/documents/{doc}", headers=AUTH)
        assert again.json()["already_deleted"] is True
        assert (await client.get(f"/documents/{doc}")).json()["status"] == "deleted"
        assert_error(await client.get(f"/documents/{doc}/markdown"), 410, "deleted")
        assert_error(await client.post(f"/documents/{doc}/reprocess", headers=AUTH), 409, "deleted")
        missing = "00000000-0000-0000-0000-000000000001"
        assert_error(await client.request("DELETE", f"/documents/{missing}", headers=AUTH), 404)
        assert_error(await client.post(f"/documents/{missing}/reprocess", headers=AUTH), 404)
        # Upload the same content again: the same document comes back (not a second copy of it).
        r = await upload(client, MD)
        assert r.status_code == 202 and r.json()["document_id"] == doc and r.json()["created"] is True
        assert (await client.get(f"/documents/{doc}")).json()["status"] == "uploaded"
        r = await upload(client, MD)
        assert r.status_code == 200 and r.json()["document_id"] == doc and r.json()["created"] is False


async def test_events_feed_pages_in_order(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, rt):
        docs = [(await upload(client, md(i))).json()["document_id"] for i in range(3)]
        for d in docs:
            await fake_cost(rt, d, 0.01)
        expected = [
            r["event_id"] for r in await pool.fetch("SELECT event_id::text FROM events ORDER BY tx_id, position")
        ]
        got: list[str] = []
        after = "0"
        while True:
            page = (await client.get("/events", params={"after": after, "limit": "2"})).json()
            got += [e["event_id"] for e in page["events"]]
            if not page["events"]:
                break
            after = page["next"]
        assert got == expected and page["head"] == await pool.fetchval("SELECT max(position) FROM events")
        second_position = (await client.get("/events", params={"limit": "2"})).json()["events"][1]["position"]
        rest = (await client.get("/events", params={"after": str(second_position)})).json()["events"]
        assert [e["event_id"] for e in rest] == expected[2:]
        costs = (await client.get("/events", params={"types": "CostIncurred", "data": "none"})).json()["events"]
        assert len(costs) == 3 and all("data" not in e for e in costs)
        assert_error(await client.get("/events", params={"after": "x-y"}), 400, "invalid_cursor")
        assert_error(await client.get("/events", params={"limit": "5000"}), 400, "invalid_parameter")
        assert_error(await client.get("/events", params={"data": "all"}), 400, "invalid_parameter")


async def test_search_costs_metrics_health(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, rt):
        empty = (await client.get("/search", params={"q": "harbour"})).json()
        assert empty["hits"] == [] and empty["model"] is None
        assert_error(await client.get("/search"), 400, "invalid_parameter")
        assert_error(await client.get("/search", params={"q": "x", "k": "0"}), 400, "invalid_parameter")

        doc = (await upload(client, MD)).json()["document_id"]
        await fake_cost(rt, doc, 0.5)
        await fake_cost(rt, doc, 0.25, stage="embed")
        await fake_failure(rt, doc)
        await catch_up_all(pool, dsn)
        costs = (await client.get("/costs")).json()
        assert costs["total_usd"] == pytest.approx(0.75) and len(costs["days"]) == 1
        assert costs["days"][0]["by_stage"] == {"convert": 0.5, "embed": 0.25}
        assert costs["month"]["spent_usd"] == pytest.approx(0.75) and costs["month"]["budget_usd"] > 0
        old = (await client.get("/costs", params={"from": "2020-01-01", "to": "2020-01-31"})).json()
        assert old["total_usd"] == 0 and old["days"] == []
        assert_error(await client.get("/costs", params={"from": "yesterday"}), 400, "invalid_parameter")
        assert_error(await client.get("/costs", params={"from": "2024-02-01", "to": "2024-01-01"}), 400)

        text = (await client.get("/metrics")).text
        assert 'chronos_events_appended_total{type="DocumentUploaded"} 1' in text
        assert 'chronos_stage_failures_total{stage="convert",error_class="BrokenInput",final="true"} 1' in text
        assert 'chronos_spend_usd_total{stage="convert",provider="local"} 0.5' in text
        assert 'chronos_documents{status="failed"} 1' in text
        assert "chronos_workers_connected 0" in text and "# TYPE chronos_stage_duration_seconds histogram" in text

        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is True
        assert ready.json()["checks"]["workers"]["connected"] == 0


async def test_readyz_with_in_process_worker(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store, worker_slots=1) as (client, _app, _rt):

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        from tests.api_support import wait_until

        await wait_until(ready, timeout=30)
        body = (await client.get("/readyz")).json()
        assert body["checks"]["workers"]["connected"] >= 1 and body["checks"]["workers"]["in_process"] == 1


async def test_errors_are_json_without_internals(
    dsn: str, pool: asyncpg.Pool, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asgi_client(dsn, pool, store, max_body_bytes=1024) as (client, _app, rt):
        assert_error(await client.get("/nowhere"), 404, "not_found")
        assert_error(await client.put("/documents", headers=AUTH), 405, "method_not_allowed")
        assert_error(await client.get("/documents", headers={"X-Big": "x" * 20_000}), 431, "headers_too_large")
        doc = (await upload(client, MD)).json()["document_id"]
        r = await client.post(f"/documents/{doc}/reprocess", content=b"{" + b" " * 5000 + b"}", headers=AUTH)
        assert_error(r, 413, "payload_too_large")

        async def boom(*_a: object, **_k: object) -> None:
            raise RuntimeError("secret internals at /srv/db password=hunter2")

        monkeypatch.setattr(rt.store, "read_stream", boom)
        r = await client.get(f"/documents/{doc}")
        body = assert_error(r, 500, "internal")
        assert (
            "hunter2" not in r.text
            and "Traceback" not in r.text
            and body["error"]["message"] == "internal server error"
        )


ROOT = Path(__file__).resolve().parent.parent


async def test_large_uploads_stream_with_bounded_memory(dsn: str) -> None:
    """32 MB raw and 32 MB multipart uploads: the process never holds more than a few MB extra.

    Measured in a fresh interpreter (tests/upload_memory_probe.py) so that nothing else this test
    session runs can add allocations to the figure."""
    root = ROOT
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.upload_memory_probe", dsn],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    total = 32 * 1024 * 1024
    raw, multipart, peak = result["raw"], result["multipart"], result["peak"]
    assert raw["status"] == 202 and raw["body"]["size"] == total, raw
    assert multipart["status"] == 202 and multipart["body"]["size"] == total, multipart
    assert multipart["body"]["filename"] == "big.md", multipart
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB for 32 MB uploads"
