"""The dashboard in headless Chromium (Debian's ``chromium`` package, driven by playwright): a
document uploaded through the page reaches "searchable" on the page, live through the SSE stream,
with the real stages running in the server process; a failure shows its reason and the retry
button requests the stage again. Skipped when /usr/bin/chromium is not installed."""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app.catalogue.codec import new_event
from app.catalogue.events import CostIncurred
from app.catalogue.ids import stream_for
from app.config import Settings
from app.runtime import Runtime
from app.services.upload import ingest_stream
from events.blobs import PgBlobStore, aiter_bytes
from events.store import EventStore
from tests.api_support import TOKEN, fake_cost, fake_failure, server_thread, settings_for, wait_until

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


GEOMETRY = """() => {
  const num = (n, a) => Number(n.getAttribute(a));
  const bars = [...document.querySelectorAll("#cost-chart rect.day")].map((r) => ({
    y: num(r, "y"), h: num(r, "height"), key: r.dataset.key || "", usd: Number(r.dataset.usd || 0) }))
    .filter((b) => b.h > 0);
  const overhead = [...document.querySelectorAll("#cost-chart rect.overhead")].map((r) => ({
    y: num(r, "y"), h: num(r, "height"), key: r.dataset.key || "" }));
  const budget = document.querySelector("#cost-chart line.budget");
  const axis = [...document.querySelectorAll("#cost-chart text.axis")].map((t) => t.textContent);
  return { bars, overhead, budgetY: num(budget, "y1"), axis };
}"""


async def modal_cost(rt: Runtime, document_id: str, usd: float) -> None:
    """A Modal convert line of which cold start + idle are half the container time (as app.costs writes it)."""
    details = {"gpu": "L4", "container_s": 10.0, "busy_s": 5.0, "cold_start_s": 3.0, "idle_s": 2.0}
    cost = CostIncurred(
        document_id=document_id, stage="convert", provider="modal", resource="gpu_seconds", quantity=usd / 0.000222,
        unit_price_usd=0.000222, amount_usd=usd, caused_by=str(uuid.uuid4()), details=details,
    )  # fmt: skip
    await rt.store.append(stream_for(document_id), [new_event(cost, {"actor": "test"})])


async def test_cost_chart_is_one_honest_scale_stacked_by_provider_and_stage(
    dsn: str, pool: asyncpg.Pool, store: EventStore, browser: Any
) -> None:
    """Bars, the cumulative line and the budget line share one scale: $0.0004 against a $54 budget is
    a sliver (it was drawn 60 % of the chart high, two-thirds of the way to the budget line); $27 is
    half-way to the budget line; a day stacks provider·stage segments with Modal's cold-start/idle
    share hatched on top of its segment; an 80 % alert shows under the chart."""
    expect = playwright_api.expect
    settings = settings_for(dsn, monthly_budget_usd=Decimal(54))
    rt = Runtime(settings, dsn, pool, store, PgBlobStore(pool))
    upload = await ingest_stream(
        store, rt.blobs, aiter_bytes(b"# Costs\n\nbody\n"), filename="costs.md", source="cli", actor="test"
    )
    doc = upload.document_id
    await fake_cost(rt, doc, 0.0004)
    ledger = "SELECT count(*) FROM cost_ledger"
    with server_thread(settings, run_projections=True) as server:
        await wait_until(lambda: pool.fetchval(ledger), timeout=60)
        page, problems = await open_page(browser, server.url)
        await expect(page.locator("#cost-chart line.budget")).to_have_count(1, timeout=30_000)
        g = await page.evaluate(GEOMETRY)
        [bar] = g["bars"]
        baseline = bar["y"] + bar["h"]
        assert bar["h"] / (baseline - g["budgetY"]) == pytest.approx(0.0004 / 54, abs=1e-4)
        assert g["axis"][-1] == "$60"  # the axis ends on a round number above the budget
        await expect(page.locator("#cost-summary")).to_contain_text("under a pixel")

        await modal_cost(rt, doc, 27.0)
        await fake_cost(rt, doc, 5.4, stage="embed")

        async def three_lines() -> bool:
            return await pool.fetchval(ledger) == 3

        await wait_until(three_lines, timeout=60)
        await page.reload()
        await expect(page.locator("#cost-chart rect.day").nth(2)).to_be_attached(timeout=30_000)
        g = await page.evaluate(GEOMETRY)
        bars = {b["key"]: b for b in g["bars"]}
        assert set(bars) == {"local · convert", "local · embed", "modal · convert"}
        to_budget = baseline - g["budgetY"]
        assert bars["modal · convert"]["h"] / to_budget == pytest.approx(0.5, abs=0.005)
        assert bars["local · embed"]["h"] / to_budget == pytest.approx(0.1, abs=0.005)
        stacked = sorted(g["bars"], key=lambda b: -b["y"])  # bottom first: each starts where the last ended
        for below, above in itertools.pairwise(stacked):
            assert above["y"] + above["h"] == pytest.approx(below["y"], abs=0.01)
        [overhead] = g["overhead"]
        assert overhead["key"] == "modal · convert" and overhead["y"] == pytest.approx(bars["modal · convert"]["y"])
        assert overhead["h"] == pytest.approx(bars["modal · convert"]["h"] / 2, rel=0.01)
        await expect(page.locator('#cost-legend li[data-key="modal · convert"]')).to_contain_text("$27.0000")
        await expect(page.locator("#cost-legend .overhead-share")).to_contain_text("$13.5000 (50 % of Modal)")
        await expect(page.locator("#cost-alerts")).to_be_hidden()

        await fake_cost(rt, doc, 11.0)  # $43.4004 of $54: past 80 %
        await wait_until(
            lambda: pool.fetchval("SELECT count(*) FROM events WHERE type = 'BudgetThresholdCrossed'"), timeout=60
        )
        await page.reload()
        alert = page.locator('#cost-alerts li[data-threshold="80"]')
        await expect(alert).to_contain_text("80 % of the budget crossed", timeout=30_000)
        await expect(alert).to_contain_text("not sent (no webhook configured)")
        assert not problems, problems
        await page.close()
