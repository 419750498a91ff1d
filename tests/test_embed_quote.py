"""The reprocess quote for embedding: models resolved with the embedders' own parser, priced by app.costs."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from app import cli
from app.config import Settings
from app.costs import price
from app.embedders import EmbedderUnavailable
from app.embedders.encoding import load_encoding
from app.errors import InvalidRequest
from app.services import reprocess
from app.services.selection import Selection
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors

TEXTS = ["The harbour cranes were built in 1911 and rebuilt after the flood.",
         "Orchids of the northern valleys bloom late in the summer.",
         "Copper roofs turn green as the metal weathers."]  # fmt: skip


SETTINGS = Settings(openai_api_key="sk-quote")


async def quote(pool: asyncpg.Pool, ids: list[str], model: str, *, batch_api: bool = False) -> reprocess.Quote:
    """The quote ``plan`` makes for re-embedding ``ids`` with ``model`` (as the CLI and the API ask it)."""
    wanted = reprocess.StageRequest(stage="embed", model=model, batch_api=batch_api)
    return (await reprocess.plan(pool, SETTINGS, Selection(document_ids=tuple(ids)), wanted)).quote


def tokens(texts: list[str]) -> int:
    return sum(len(load_encoding().encode_ordinary(t)) for t in texts)


async def docs(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> list[SyntheticDocument]:
    out = []
    for i in range(2):
        doc = SyntheticDocument(store, blobs, filename=f"q{i}.pdf")
        await doc.upload(f"quote {i}".encode())
        await doc.convert()
        await doc.chunk([f"{t} ({i})" for t in TEXTS])
        out.append(doc)
    await catch_up_all(pool, dsn)
    return out


async def test_quote_resolves_the_model_like_the_embedders(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    a, b = await docs(store, blobs, pool, dsn)
    ids = [a.document_id, b.document_id]
    all_texts = a.texts + b.texts

    small = await quote(pool, ids, "openai:text-embedding-3-small@512")  # was a KeyError
    assert small.resource == "tokens" and small.quantity == tokens(all_texts)
    assert small.usd == pytest.approx(tokens(all_texts) * price("openai_token_text-embedding-3-small"))
    assert small.details["model"] == "openai:text-embedding-3-small@512"

    large = await quote(pool, ids, "text-embedding-3-large")  # was $0: no prefix
    assert large.usd == pytest.approx(tokens(all_texts) * price("openai_token_text-embedding-3-large"))
    assert large.usd > 0 and large.details["model"] == "openai:text-embedding-3-large"
    assert large.to_json()["unit_price_usd"] == price("openai_token_text-embedding-3-large")

    batch = await quote(pool, ids, "text-embedding-3-large", batch_api=True)
    assert batch.usd == pytest.approx(large.usd / 2) and batch.to_json()["batch_api"] is True

    local = await quote(pool, ids, "local:all-MiniLM-L6-v2")
    assert local.usd == 0 and local.resource is None

    # What the cache holds for that model and size is free; another size of the same model is not.
    await a.embed(random_unit_vectors(np.random.default_rng(3), 3, 512), "openai:text-embedding-3-small@512")
    await catch_up_all(pool, dsn)
    cached = await quote(pool, ids, "openai:text-embedding-3-small@512")
    assert cached.quantity == tokens(b.texts)
    other = await quote(pool, ids, "openai:text-embedding-3-small@256")
    assert other.quantity == tokens(all_texts)

    # Unusable models are a bad request (400 / exit 2), never an internal error.
    with pytest.raises(EmbedderUnavailable, match="at most 4000") as too_large:
        await quote(pool, ids, "openai:custom@8192")
    assert isinstance(too_large.value, InvalidRequest) and too_large.value.http_status == 400
    with pytest.raises(EmbedderUnavailable, match="unknown OpenAI embedding model"):
        await quote(pool, ids, "openai:text-embedding-9")
    with pytest.raises(InvalidRequest, match="Batch API; local:all-MiniLM-L6-v2 runs locally"):
        await quote(pool, ids, "local:all-MiniLM-L6-v2", batch_api=True)


async def test_an_unprefixed_paid_model_stops_at_the_budget(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    await docs(store, blobs, pool, dsn)
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-quote")
    monkeypatch.setenv("CHRONOS_MONTHLY_BUDGET_USD", "0.000001")
    argv = ["reprocess", "--stage", "embed", "--model", "text-embedding-3-large", "--all", "--yes"]
    code = await asyncio.to_thread(cli.main, argv)  # the CLI's own error mapping: OverBudget exits 2
    assert code == 2 and "monthly budget" in capsys.readouterr().err
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'EmbeddingRequested'") == 0
