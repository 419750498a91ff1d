"""The analyst role reads projections and views; it cannot write nor read the raw blob store."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors


async def test_analyst_role(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> None:
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.convert()
    await doc.chunk(["a", "b"])
    await doc.embed(random_unit_vectors(np.random.default_rng(0), 2, 8), "local:m8")
    await catch_up_all(pool, dsn)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE chronos_analyst")
        assert await conn.fetchval("SELECT status FROM v_documents") == "searchable"
        assert await conn.fetchval("SELECT count(*) FROM v_stage_events") == 3
        assert await conn.fetchval("SELECT budget_usd FROM v_budget_month") == 50
        assert await conn.fetchval("SELECT count(*) FROM v_cost_daily") == 1
        assert await conn.fetchval("SELECT count(*) FROM v_stage_latency_daily") == 3
        assert await conn.fetchval("SELECT count(*) FROM search_chunks($1::vector, 2)", np.ones(8, np.float32)) == 2
    denied = [
        "INSERT INTO documents (document_id, filename, status, stream_version, last_position) "
        "VALUES (gen_random_uuid(), 'x', 'uploaded', 1, 1)",
        "UPDATE documents SET status = 'failed'",
        "DELETE FROM chunks",
        "SELECT * FROM blobs",
        "SELECT * FROM blob_chunks",
        "UPDATE settings SET value = '0'",
    ]
    for sql in denied:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL ROLE chronos_analyst")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)


async def test_costs_month_to_date_and_budget(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import Settings
    from app.services.budget import month_to_date

    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.convert(seconds=100.0)
    await catch_up_all(pool, dsn)
    report = (await month_to_date(pool, Settings())).to_json()
    assert report["spent_usd"] == pytest.approx(100 * 0.0000131)
    assert (report["budget_usd"], report["over_budget"]) == (50.0, False)
    monkeypatch.setenv("CHRONOS_MONTHLY_BUDGET_USD", "0.001")
    assert (await month_to_date(pool, Settings.from_env())).over_budget is True
