"""Query embeddings are spend: a search with an OpenAI model appends a CostIncurred (stage search,
document_id NULL) that the ledger and the month's budget count; a local model's query adds no line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator

import asyncpg
import numpy as np
import pytest

from app import cli
from app.catalogue import events as ev
from app.commands import search as search_command
from app.config import Settings
from app.costs import price
from app.services.search import search
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument
from tests.api_support import AUTH, asgi_client
from tests.openai_standin import StandIn, openai_standin, rate_limited, vector_for

MODEL = "openai:text-embedding-3-small@64"
TEXTS = ["cranes in the harbour", "orchids in the valley", "copper on the roof"]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with openai_standin() as srv:
        yield srv


async def searchable(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> SyntheticDocument:
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.chunk(TEXTS)
    await doc.embed(np.stack([vector_for(t, 64) for t in TEXTS]), MODEL)
    await catch_up_all(pool, dsn)
    return doc


async def search_lines(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM cost_ledger WHERE stage = 'search' ORDER BY position"))


async def test_each_paid_query_is_a_ledger_line_from_the_function_the_cli_and_the_api(
    store: EventStore,
    blobs: PgBlobStore,
    pool: asyncpg.Pool,
    dsn: str,
    standin: StandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = await searchable(store, blobs, pool, dsn)
    settings = Settings(database_url=dsn, openai_api_key="sk-search", openai_base_url=standin.url)
    hits = await search(pool, settings, "orchids in the valley", 2, store=store)
    assert hits[0].document_id == doc.document_id and hits[0].text == "orchids in the valley"

    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-search")
    monkeypatch.setenv("OPENAI_BASE_URL", standin.url)
    parser = argparse.ArgumentParser()
    search_command.register(parser.add_subparsers())
    args = parser.parse_args(["search", "copper on the roof", "-k", "1", "--mode", "vector", "--json"])
    assert await search_command.main(args) == 0

    async with asgi_client(dsn, pool, store, openai_api_key="sk-search", openai_base_url=standin.url) as (
        client, _app, _rt,
    ):  # fmt: skip
        answer = await client.get("/search", params={"q": "cranes in the harbour", "k": 1}, headers=AUTH)
        assert answer.status_code == 200 and answer.json()["hits"][0]["text"] == "cranes in the harbour"

    await catch_up_all(pool, dsn)
    lines = await search_lines(pool)
    assert len(lines) == 3 == len(standin.requests)
    assert all(r["document_id"] is None and r["provider"] == "openai" for r in lines)
    assert sum(r["quantity"] for r in lines) == standin.billed_tokens
    unit = price("openai_token_text-embedding-3-small")
    assert float(sum(r["amount_usd"] for r in lines)) == pytest.approx(standin.billed_tokens * unit, abs=3e-8)
    month = await pool.fetchval("SELECT spent_usd FROM v_budget_month")
    assert float(month) == pytest.approx(float(sum(r["amount_usd"] for r in lines)))
    streams = await pool.fetch("SELECT DISTINCT stream_id FROM events WHERE type = $1", ev.CostIncurred.TYPE)
    assert all(r["stream_id"].startswith("search-") for r in streams)
    actors = [
        r["actor"]
        for r in await pool.fetch(
            "SELECT metadata ->> 'actor' AS actor FROM events WHERE type = $1 ORDER BY position", ev.CostIncurred.TYPE
        )
    ]
    assert actors[:2] == ["search", "cli"] and actors[2].startswith("token:")  # the API: the caller's token


@pytest.mark.local_models
async def test_a_local_query_embedding_adds_no_ledger_line(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    from app.embedders import get_embedder

    local = get_embedder("local:all-MiniLM-L6-v2")
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.chunk(TEXTS)
    await doc.embed((await local.embed(TEXTS)).vectors, local.model)
    await catch_up_all(pool, dsn)
    before = await pool.fetchval("SELECT count(*) FROM events")
    hits = await search(pool, Settings(database_url=dsn), "orchids", 1, store=store)
    assert hits[0].document_id == doc.document_id
    assert await pool.fetchval("SELECT count(*) FROM events") == before


async def test_an_embedder_failure_is_an_answer_not_a_500_or_a_traceback(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, standin: StandIn,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The embedder errors are ChronosError kinds: the API answers them with their status and code, the
    CLI with a message and an exit code -- OpenAI unavailable is 503 / exit 69, OpenAI refusing Chronos's
    key is 502 (the API client's own token is fine) / exit 78, and nothing is charged for either."""
    await searchable(store, blobs, pool, dsn)
    standin.api_keys = {"sk-right"}
    async with asgi_client(dsn, pool, store, openai_api_key="sk-right", openai_base_url=standin.url) as (
        client, _app, _rt,
    ):  # fmt: skip
        standin.script = [rate_limited(retry_after_ms=5)] * 6  # the client's 5 retries, all refused
        down = await client.get("/search", params={"q": "cranes in the harbour"})
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "embedder_unavailable" and "try again later" in down.text
    async with asgi_client(dsn, pool, store, openai_api_key="sk-wrong", openai_base_url=standin.url) as (
        client, _app, _rt,
    ):  # fmt: skip
        refused = await client.get("/search", params={"q": "cranes in the harbour"})
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "embedder_auth" and "OPENAI_API_KEY" in refused.text

    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    monkeypatch.setenv("OPENAI_BASE_URL", standin.url)
    code = await asyncio.to_thread(cli.main, ["search", "copper on the roof"])
    err = capsys.readouterr().err
    assert code == 78 and "chronos search: error:" in err and "OPENAI_API_KEY" in err
    assert "Traceback" not in err
    assert await search_lines(pool) == []
