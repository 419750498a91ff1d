"""Switching the embedding model (``chronos reprocess --stage embed --model X --all``) while documents
keep arriving: documents ingested during the switch are embedded with the target model too (and with
their own), so the new model comes to cover every document; search answers with the old model until
then and switches over in one step. OpenAI is the local stand-in server; the target is the local model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.check import run_checks
from app.config import Settings
from app.pipeline import dispatcher, jobs
from app.pipeline.worker import Worker
from app.runtime import Runtime
from events import EventStore, PgBlobStore
from events.subscription import Subscription
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument
from tests.openai_standin import StandIn, openai_standin
from tests.support import request
from tests.test_pipeline import put_bytes
from tests.test_stages_chunk import drain

pytestmark = pytest.mark.local_models

OLD = "openai:text-embedding-3-small"
NEW = "local:all-MiniLM-L6-v2"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with openai_standin() as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore, standin: StandIn) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=dsn, openai_api_key="sk-test", openai_base_url=standin.url)
    yield Runtime(settings, dsn, pool, store, PgBlobStore(pool))


async def models(pool: asyncpg.Pool) -> dict[str, tuple[int, int, bool]]:
    rows = await pool.fetch("SELECT model, covered_documents, documents, active FROM v_search_models")
    return {r["model"]: (r["covered_documents"], r["documents"], r["active"]) for r in rows}


async def embedded(rt: Runtime, document_id: str) -> list[str]:
    events = await rt.store.read_stream(stream_for(document_id))
    return sorted(e.data["model"] for e in events if e.type == ev.ChunksEmbedded.TYPE)


async def test_switch_covers_documents_ingested_meanwhile(rt: Runtime, standin: StandIn) -> None:
    first = [
        await put_bytes(rt, f"# Doc {i}\n\nAbout harbors and glaciers, part {i}.\n".encode(), f"d{i}.md")
        for i in range(2)
    ]
    await drain(rt)
    await catch_up_all(rt.pool, rt.dsn)
    assert await models(rt.pool) == {OLD: (2, 2, True)}  # the default with OPENAI_API_KEY set

    ids = [u.document_id for u in first]
    assert await request(rt.store, "embed", ids, switch=True, model=NEW) == 2
    # One of the two requests done: the new model covers half; the old one still answers.
    await Subscription(rt.store, dispatcher.NAME, dispatcher.dispatch).catch_up()
    worker = Worker(rt)
    [job] = await jobs.claim(rt.pool, ["embed"], worker.owner, 60, 1)
    await worker._work(job)
    await catch_up_all(rt.pool, rt.dsn)
    assert await models(rt.pool) == {OLD: (2, 2, True), NEW: (1, 2, False)}

    # A document arrives during the switch: embedded with its own model and with the target.
    late = await put_bytes(rt, b"# Late\n\nA document about orchids that arrives during the switch.\n", "late.md")
    await drain(rt)
    assert await embedded(rt, late.document_id) == sorted([OLD, NEW])
    chunked = [
        e.data for e in await rt.store.read_stream(stream_for(late.document_id)) if e.type == ev.DocumentChunked.TYPE
    ]
    assert chunked[0]["parameters"]["embedder_max_tokens"] == 256  # fitted to the smaller window
    costs = await rt.pool.fetchval(
        "SELECT count(*) FROM events WHERE type = 'CostIncurred' AND stream_id = $1", stream_for(late.document_id)
    )
    assert costs >= 2  # convert + each embedding's own cost event, none overwritten
    await catch_up_all(rt.pool, rt.dsn)
    assert await models(rt.pool) == {OLD: (3, 3, False), NEW: (3, 3, True)}  # switched in one step
    hits = await rt.pool.fetch("SELECT model, count(*) AS n FROM vectors GROUP BY model ORDER BY model")
    assert {r["model"]: r["n"] for r in hits}[NEW] == await rt.pool.fetchval("SELECT count(*) FROM chunks")

    # After the switch, new documents keep getting the new model.
    after = await put_bytes(rt, b"# After\n\nSaffron and copper, after the switch.\n", "after.md")
    await drain(rt)
    assert NEW in await embedded(rt, after.document_id)
    await catch_up_all(rt.pool, rt.dsn)
    assert (await models(rt.pool))[NEW] == (4, 4, True)
    report = await run_checks(rt.pool)
    assert not report.errors, [f.to_json() for f in report.errors]


async def test_single_document_trial_is_not_a_switch(rt: Runtime) -> None:
    first = await put_bytes(rt, b"# Trial\n\nOne document tried with another model.\n", "trial.md")
    await drain(rt)
    await request(rt.store, "embed", [first.document_id], model=NEW)
    await drain(rt)
    later = await put_bytes(rt, b"# Later\n\nNot part of any switch.\n", "later.md")
    await drain(rt)
    assert await embedded(rt, later.document_id) == [OLD]


async def test_request_ahead_of_the_chunks_is_not_a_failure(rt: Runtime) -> None:
    """A switch reaching a document that is still converting: no failure; its chunks get the model."""
    doc = SyntheticDocument(rt.store, rt.blobs)
    await doc.upload()
    await doc.request("embed", model=NEW)
    await drain(rt, "embed")
    kinds = [e.type for e in await rt.store.read_stream(stream_for(doc.document_id))]
    assert ev.EmbeddingFailed.TYPE not in kinds
    assert await rt.pool.fetchval("SELECT status FROM jobs WHERE stage = 'embed'") == "done"
