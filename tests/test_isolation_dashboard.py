"""The dashboard's cost chart per collection (issue 15), in headless Chromium: the collection selector
lists the collections, choosing one draws that collection's spend against its own budget (no budget
line for one without a budget), and each collection's month is listed under the chart. Skipped like
tests/test_api_dashboard.py when Chromium or playwright is missing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from app.config import Settings
from app.runtime import Runtime
from events.blobs import PgBlobStore
from events.store import EventStore
from projections.synthetic import SyntheticDocument
from tests.api_support import fake_cost, server_thread, settings_for, wait_until
from tests.test_api_dashboard import browser, open_page, playwright_api, pytestmark  # noqa: F401 (fixture, skip)
from tests.test_isolation_budgets import collection
from tests.test_isolation_rls import upload_into


async def test_cost_chart_per_collection(dsn: str, pool: asyncpg.Pool, store: EventStore, browser: Any) -> None:  # noqa: F811
    expect = playwright_api.expect
    settings = settings_for(dsn, monthly_budget_usd=Decimal(54))
    rt = Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))
    await collection(store, "alpha", 4.0)
    await collection(store, "bravo", None)
    docs = {}
    for name in ("alpha", "bravo"):
        doc = SyntheticDocument(store, rt.blobs, filename=f"{name}.pdf")
        await upload_into(doc, name)
        docs[name] = doc.document_id
    await fake_cost(rt, docs["alpha"], 1.5)
    await fake_cost(rt, docs["bravo"], 2.25)
    with server_thread(settings, run_projections=True) as server:
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 2 FROM cost_ledger"), timeout=60)
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 3 FROM collections"), timeout=60)
        page, problems = await open_page(browser, server.url)
        await expect(page.locator("#cost-summary")).to_contain_text("$3.7500 of $54.0000", timeout=30_000)
        await expect(page.locator('#cost-collections li[data-collection="alpha"]')).to_contain_text(
            "$1.5000 of $4.0000"
        )
        await expect(page.locator('#cost-collections li[data-collection="bravo"]')).to_contain_text(
            "no budget of its own"
        )
        await expect(page.locator("#cost-collection option")).to_have_count(4)  # every one, default, alpha, bravo
        await page.select_option("#cost-collection", "alpha")
        await expect(page.locator("#cost-summary")).to_contain_text("in collection alpha $1.5000 of $4.0000")
        await expect(page.locator("#cost-chart line.budget")).to_have_attribute("data-usd", "4")
        await page.select_option("#cost-collection", "bravo")
        await expect(page.locator("#cost-summary")).to_contain_text("in collection bravo $2.2500 of no budget")
        await expect(page.locator("#cost-chart line.budget")).to_have_count(0)
        assert not problems, problems
        await page.close()
