"""A later failure never loses a paid result: the embed stage against the OpenAI stand-in (real client).

Request 1 of a document's embedding succeeds (and is billed), request 2 fails for good: the ledger has
request 1's tokens, its vectors are kept (EmbeddingsCached, taken in by the embedding cache), and the
retry sends only request 2's texts. The same across models during a model switch."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator

import asyncpg
import numpy as np
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.check import run_checks
from app.config import Settings
from app.costs import price
from app.runtime import Runtime
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument
from tests.openai_standin import StandIn, openai_standin, rate_limited
from tests.test_stages_chunk import drain

SMALL = "openai:text-embedding-3-small"
SMALL_256 = "openai:text-embedding-3-small@256"
GIVE_UP = [rate_limited(retry_after_ms=5)] * 6  # the client's 5 retries, all refused: the request fails for good


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with openai_standin() as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore, standin: StandIn) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=dsn, openai_api_key="sk-test", openai_base_url=standin.url)
    yield Runtime(settings, dsn, pool, store, PgBlobStore(pool))


async def ledger(pool: asyncpg.Pool) -> tuple[float, float]:
    row = await pool.fetchrow("SELECT coalesce(sum(quantity), 0) AS tokens, coalesce(sum(amount_usd), 0) AS usd "
                              "FROM cost_ledger WHERE provider = 'openai'")  # fmt: skip
    assert row is not None
    return float(row["tokens"]), float(row["usd"])


async def types(rt: Runtime, doc: SyntheticDocument) -> list[str]:
    return [e.type for e in await rt.store.read_stream(doc.stream)]


async def test_second_request_failing_keeps_the_first_and_the_retry_sends_only_the_rest(
    rt: Runtime, standin: StandIn
) -> None:
    texts = [f"note {i} on harbour cranes" for i in range(2100)]  # two requests: 2048 inputs + 52
    standin.script = [None, *GIVE_UP]
    doc = SyntheticDocument(rt.store, rt.blobs)
    await doc.upload()
    await doc.convert()
    await doc.chunk(texts)
    await drain(rt, "embed")
    kinds = await types(rt, doc)
    assert kinds.count(ev.EmbeddingFailed.TYPE) == 1 and kinds.count(ev.EmbeddingsCached.TYPE) == 1
    assert kinds.count(ev.ChunksEmbedded.TYPE) == 1  # on the retry

    sent = Counter(standin.received_inputs())
    assert all(sent[t] == 1 for t in texts[:2048])  # request 1's texts: sent (and paid) once
    assert standin.requests[-1]["input"] == texts[2048:]  # the retry: only what was missing
    await catch_up_all(rt.pool, rt.dsn)
    tokens, usd = await ledger(rt.pool)
    assert tokens == standin.billed_tokens  # the ledger is the bill: request 1, then the retry's request
    assert usd == pytest.approx(standin.billed_tokens * price("openai_token_text-embedding-3-small"), abs=1e-7)
    lines = await rt.pool.fetchval("SELECT count(*) FROM cost_ledger WHERE provider = 'openai'")
    assert lines == 2  # one per result: request 1's (EmbeddingsCached), the retry's (ChunksEmbedded)
    assert await rt.pool.fetchval("SELECT count(*) FROM vectors WHERE document_id = $1", doc.document_id) == 2100
    cached = await rt.pool.fetchval("SELECT count(DISTINCT text_sha256) FROM embedding_cache WHERE model = $1", SMALL)
    assert cached == 2100
    embedded = [e.data for e in await rt.store.read_stream(doc.stream) if e.type == ev.ChunksEmbedded.TYPE]
    assert embedded[0]["reused_count"] == 2048


async def test_a_document_embedded_in_several_requests_has_one_ledger_line_and_a_clean_check(
    rt: Runtime, standin: StandIn
) -> None:
    """OpenAI bills request by request; the result's ledger line is their sum (``chronos check`` counts
    two lines of one resource for one result as paid twice)."""
    texts = [f"entry {i} of the tide tables" for i in range(2100)]  # two requests: 2048 inputs + 52
    doc = SyntheticDocument(rt.store, rt.blobs)
    await doc.upload()
    await doc.convert()
    await doc.chunk(texts)
    await drain(rt, "embed")
    assert len(standin.requests) == 2
    await catch_up_all(rt.pool, rt.dsn)
    rows = await rt.pool.fetch(
        "SELECT quantity, amount_usd, (details ->> 'requests')::int AS requests, "
        "(details ->> 'inputs')::int AS inputs FROM cost_ledger WHERE provider = 'openai'"
    )
    assert len(rows) == 1 and rows[0]["quantity"] == standin.billed_tokens
    assert (rows[0]["requests"], rows[0]["inputs"]) == (2, 2100)
    unit = price("openai_token_text-embedding-3-small")
    assert float(rows[0]["amount_usd"]) == pytest.approx(standin.billed_tokens * unit, abs=1e-7)
    report = await run_checks(rt.pool)
    assert not [f for f in report.errors if f.check == "duplicate_costs"], [f.to_json() for f in report.errors]


async def test_a_model_switch_keeps_the_model_that_finished_when_the_next_fails(rt: Runtime, standin: StandIn) -> None:
    switch = SyntheticDocument(rt.store, rt.blobs)  # reprocess --stage embed --model X --all, seen by the stage
    await switch.upload(b"switch")
    await switch.request("embed", model=SMALL_256, scope="all")
    await drain(rt, "embed")
    standin.requests.clear()

    standin.script = [None, *GIVE_UP]  # the document's own model answers; the switch target fails for good
    doc = SyntheticDocument(rt.store, rt.blobs)
    await doc.upload()
    await doc.convert()
    await doc.chunk(["glaciers retreat", "orchids bloom", "copper tarnishes"])
    await drain(rt, "embed")
    events = [e for e in await rt.store.read_stream(doc.stream) if e.type == ev.ChunksEmbedded.TYPE]
    assert sorted(e.data["model"] for e in events) == [SMALL, SMALL_256]
    own = [body for body in standin.requests if "dimensions" not in body]
    assert len(own) == 1  # the model that finished is not embedded (or paid for) again on the retry
    await catch_up_all(rt.pool, rt.dsn)
    tokens, _usd = await ledger(rt.pool)
    assert tokens == standin.billed_tokens
    models = {r["model"] for r in await rt.pool.fetch("SELECT DISTINCT model FROM vectors WHERE document_id = $1",
                                                      doc.document_id)}  # fmt: skip
    assert models == {SMALL, SMALL_256}


async def test_unusable_vectors_blobs_are_skipped_by_the_embedding_cache_and_it_goes_on(
    rt: Runtime, standin: StandIn
) -> None:
    """A ChunksEmbedded or EmbeddingsCached whose blob is not float32 rows of its dimensions: the index
    records the problem, the embedding cache leaves those rows out (it used to stop at an assertion,
    stalling the projection for every later event) and takes in the events after it."""
    doc = SyntheticDocument(rt.store, rt.blobs)
    await doc.upload()
    await doc.convert()
    await doc.chunk(["tides", "herons", "eels"])
    bad = ev.BlobRef.of(await rt.blobs.put_bytes(b"\x00" * 10, "application/x-float32"))  # not 4 * 8 * n bytes
    await doc.append(
        ev.ChunksEmbedded(document_id=doc.document_id, chunk_set_id=doc.chunk_set_id or "", model="local:m8",
                          provider="local", dimensions=8, vectors=bad, chunk_count=3),
        ev.EmbeddingsCached(document_id=doc.document_id, chunk_set_id=doc.chunk_set_id or "", model="local:m8",
                            provider="local", dimensions=8, vectors=bad, text_sha256=["h1", "h2"], tokens=0,
                            reason="test"),
    )  # fmt: skip
    rng = np.random.default_rng(4)
    await doc.embed(rng.standard_normal((3, 8)).astype(np.float32), "local:m8")
    await catch_up_all(rt.pool, rt.dsn)
    for name in ("projection:embedding_cache", "projection:index"):
        checkpoint = await rt.pool.fetchval("SELECT position FROM subscriptions WHERE name = $1", name)
        assert checkpoint == await rt.pool.fetchval("SELECT max(position) FROM events"), name
    assert await rt.pool.fetchval("SELECT count(*) FROM embedding_cache WHERE model = 'local:m8'") == 3
    problem = await rt.pool.fetchval("SELECT problem FROM vector_problems WHERE document_id = $1", doc.document_id)
    assert "not float32 rows of 8 dimensions" in problem
