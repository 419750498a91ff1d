"""The dashboard in headless Chromium (Debian's ``chromium`` package, driven by playwright): a
document uploaded through the page reaches "searchable" on the page, live through the SSE stream,
with the real stages running in the server process; a failure shows its reason and the retry
button requests the stage again. Skipped when /usr/bin/chromium is not installed."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app.config import Settings
from app.runtime import Runtime
from app.services.upload import ingest_stream
from events.blobs import PgBlobStore, aiter_bytes
from events.store import EventStore
from tests.api_support import TOKEN, fake_cost, fake_failure, server_thread, settings_for

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)


@pytest_asyncio.fixture(loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = await browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    await page.goto(f"{url}/#token={TOKEN}")
    return page, problems


@pytest.mark.local_models
@pytest.mark.timeout(300)
async def test_upload_through_the_page_reaches_searchable(dsn: str, browser: Any) -> None:
    expect = playwright_api.expect
    with server_thread(settings_for(dsn), worker_slots=1) as server:
        page, problems = await open_page(browser, server.url)
        await expect(page.locator("#live")).to_have_text("live", timeout=30_000)
        await page.set_input_files(
            "#file",
            files=[
                {
                    "name": "dashboard-notes.md",
                    "mimeType": "text/markdown",
                    "buffer": b"# Glacier survey\n\nThe glacier retreated four metres along the canyon delta.\n",
                }
            ],
        )
        await page.click("#upload-form button[type=submit]")
        row = page.locator("#documents tr", has_text="dashboard-notes.md")
        await expect(row).to_have_count(1, timeout=30_000)
        await expect(row.locator(".status")).to_have_text("searchable", timeout=240_000)
        await expect(row.locator('.seg[data-state="done"]')).to_have_count(3, timeout=10_000)
        await expect(page.locator("#cost-chart svg line.budget")).to_have_count(1, timeout=30_000)
        assert not problems, problems
        await page.close()
        # The same document through the JSON API, processed for real: search hits, Markdown, chunks.
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            doc = (await client.get("/documents")).json()["documents"][0]
            assert doc["filename"] == "dashboard-notes.md" and doc["status"] == "searchable"
            hits = (await client.get("/search", params={"q": "How far did the glacier retreat?", "k": 3})).json()
            assert hits["hits"][0]["document_id"] == doc["document_id"] and "glacier" in hits["hits"][0]["text"]
            assert "Glacier survey" in (await client.get(f"/documents/{doc['document_id']}/markdown")).text
            chunks = (await client.get(f"/documents/{doc['document_id']}/chunks")).json()["chunks"]
            assert chunks and "glacier" in chunks[0]["text"]
            detail = (await client.get(f"/documents/{doc['document_id']}")).json()
            assert [s["status"] for s in detail["stages"]] == ["done", "done", "done"]
            assert detail["costs"]["total_usd"] > 0
            metrics = (await client.get("/metrics")).text
            assert 'chronos_stage_duration_seconds_count{stage="embed"} 1' in metrics


async def test_failures_show_reason_and_retry(dsn: str, pool: asyncpg.Pool, store: EventStore, browser: Any) -> None:
    expect = playwright_api.expect
    rt = Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))
    upload = await ingest_stream(
        store, rt.blobs, aiter_bytes(b"# Broken\n\nbody\n"), filename="broken.md", source="cli", actor="test"
    )
    await fake_cost(rt, upload.document_id, 1.25)
    with server_thread(settings_for(dsn, sse_heartbeat_s=1.0), run_projections=True) as server:
        page, problems = await open_page(browser, server.url)
        await expect(page.locator("#live")).to_have_text("live", timeout=30_000)
        row = page.locator("#documents tr", has_text="broken.md")
        await expect(row.locator(".status")).to_have_text("uploaded", timeout=30_000)
        await fake_failure(rt, upload.document_id, "convert", "PDF is password-protected")  # arrives live
        failure = page.locator("#failures tr", has_text="broken.md")
        await expect(failure).to_contain_text("PDF is password-protected", timeout=30_000)
        await expect(row.locator(".status")).to_have_text("failed")
        await failure.locator("button.retry").click()
        await expect(page.locator("#retry-status")).to_have_text("Retry requested: broken.md (convert)")
        await expect(row.locator(".status")).to_have_text("converting", timeout=30_000)  # live, from the stream
        await expect(failure).to_have_count(0)
        requested = await pool.fetchrow(
            "SELECT data, metadata FROM events WHERE type = 'ConversionRequested' AND stream_id = $1",
            f"document-{upload.document_id}",
        )
        assert requested is not None and requested["metadata"]["actor"].startswith("token:")  # the dashboard's token
        assert "1.25" in (await page.locator("#cost-summary").text_content() or "")
        assert not problems, problems
        await page.close()
