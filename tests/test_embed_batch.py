"""Bulk re-embedding through OpenAI's Batch API (half price), against the stand-in's files and batches
endpoints with the real openai client: submit, a poller killed while the batch runs and started
again, every document searchable with the new model, the ledger at the Batch API price; an expired
batch keeps what it did, and a second submission sends only what is missing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import numpy as np
import orjson
import pytest
import pytest_asyncio

from app import cli
from app.catalogue import events as ev
from app.check import run_checks
from app.config import Settings
from app.costs import price
from app.embedders.batch_jobs import BatchState, Submitted, poll_embedding_batches, submit_embedding_batches
from app.runtime import Runtime
from app.services.search import search_vector
from app.services.selection import Selection, select_documents
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors
from tests.openai_standin import StandIn, openai_standin, vector_for
from tests.test_stages_chunk import drain

OLD = "openai:text-embedding-3-small@64"  # the documents' model before (small vectors: a quick index)
NEW = "openai:text-embedding-3-small@256"
KEY = "sk-batch"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with openai_standin() as srv:
        srv.api_keys = {KEY}
        yield srv


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore, standin: StandIn) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn, openai_api_key=KEY, openai_base_url=standin.url), dsn, pool, store,
                  PgBlobStore(pool))  # fmt: skip


async def documents(rt: Runtime, texts: list[list[str]]) -> list[SyntheticDocument]:
    """Searchable documents whose model is OLD (as the pipeline leaves them)."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(len(texts)):
        doc = SyntheticDocument(rt.store, rt.blobs, filename=f"batch{i}.pdf")
        await doc.upload(f"batch {i}".encode())
        await doc.request("embed", model=OLD)  # the document's model (ahead of its chunks: nothing to do yet)
        out.append(doc)
    await drain(rt, "embed")
    for doc, chunk_texts in zip(out, texts, strict=True):
        await doc.convert()
        await doc.chunk(chunk_texts)
        await doc.embed(random_unit_vectors(rng, len(chunk_texts), 64), OLD)
    await drain(rt, "embed")  # their chunk sets' embed jobs: embedded with OLD already, nothing to do
    await catch_up_all(rt.pool, rt.dsn)
    return out


async def submit(rt: Runtime, ids: list[str], *, scope: str | None, reason: str) -> Submitted:
    return await submit_embedding_batches(rt.pool, rt.store, rt.blobs, rt.settings, ids, NEW, scope=scope,
                                          reason=reason, actor="test")  # fmt: skip


async def statuses(rt: Runtime, docs: list[SyntheticDocument]) -> list[str]:
    rows = await rt.pool.fetch("SELECT document_id, status FROM documents")
    status = {str(r["document_id"]): r["status"] for r in rows}
    return [status[d.document_id] for d in docs]


async def of_type(rt: Runtime, doc: SyntheticDocument, kind: str) -> list[dict[str, object]]:
    return [e.data for e in await rt.store.read_stream(doc.stream) if e.type == kind]


async def batch_ledger(pool: asyncpg.Pool) -> tuple[float, float]:
    row = await pool.fetchrow("SELECT coalesce(sum(quantity), 0) AS tokens, coalesce(sum(amount_usd), 0) AS usd "
                              "FROM cost_ledger WHERE details ->> 'batch_api' = 'true'")  # fmt: skip
    assert row is not None
    return float(row["tokens"]), float(row["usd"])


async def poll_until_finished(rt: Runtime) -> list[BatchState]:
    for _ in range(10):
        states = await poll_embedding_batches(rt)
        if all(s.finished for s in states):
            return states
    raise AssertionError(f"batches still open: {states}")


def poller(rt: Runtime, standin: StandIn) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": rt.dsn, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": standin.url}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "batches", "poll", "--wait", "--interval", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


async def test_batch_survives_a_killed_poller_and_every_document_moves_to_the_new_model(
    rt: Runtime, standin: StandIn
) -> None:
    texts = [[f"doc {d} paragraph {i} about tides" for i in range(4)] for d in range(3)]
    docs = await documents(rt, texts)
    submitted = await submit(rt, [d.document_id for d in docs], scope="all", reason="switch")
    assert len(submitted.batches) == 1 and submitted.batches[0].inputs == 12
    (file,) = [f for f in standin.files.values() if f["purpose"] == "batch"]
    assert file["content"].count(b'"url":"/v1/embeddings"') == 3  # one request line per document
    await drain(rt, "embed")  # the documents' EmbeddingRequested are the batch's: no synchronous embedding
    assert standin.requests == []
    await catch_up_all(rt.pool, rt.dsn)
    assert await statuses(rt, docs) == ["embedding"] * 3  # while the batch runs (search still answers: OLD)

    standin.hold_batches = True
    first = poller(rt, standin)
    for _ in range(600):  # until the poller has seen the batch in progress (at most a minute)
        if standin.batch_gets >= 3 or first.poll() is not None:
            break
        await asyncio.sleep(0.1)
    assert standin.batch_gets >= 3, first.stderr.read() if first.poll() is not None and first.stderr else ""
    first.kill()  # SIGKILL while the batch is in progress
    first.wait()
    for doc in docs:
        assert [e["model"] for e in await of_type(rt, doc, ev.ChunksEmbedded.TYPE)] == [OLD]
    assert await rt.pool.fetchval("SELECT count(*) FROM events WHERE type = $1", ev.EmbeddingBatchFinished.TYPE) == 0

    standin.hold_batches = False
    second = poller(rt, standin)
    _out, err = await asyncio.to_thread(second.communicate, timeout=120)
    assert second.returncode == 0, err.decode()
    (finished,) = [e.data for e in await rt.store.read_stream(f"embedding-batch-{submitted.batches[0].batch_id}")
                   if e.type == ev.EmbeddingBatchFinished.TYPE]  # fmt: skip
    assert finished["status"] == "completed" and sorted(finished["embedded_documents"]) == sorted(
        d.document_id for d in docs
    )
    for doc in docs:
        models = [e["model"] for e in await of_type(rt, doc, ev.ChunksEmbedded.TYPE)]
        assert models.count(NEW) == 1  # recorded once, although two pollers saw the batch

    await catch_up_all(rt.pool, rt.dsn)
    assert await statuses(rt, docs) == ["searchable"] * 3
    active = await rt.pool.fetchrow("SELECT model, complete FROM v_search_models WHERE active")
    assert active is not None and active["model"] == NEW and active["complete"]
    for doc, chunk_texts in zip(docs, texts, strict=True):
        hit = (await search_vector(rt.pool, vector_for(chunk_texts[2], 256), 1, NEW))[0]
        assert hit.document_id == doc.document_id and hit.text == chunk_texts[2]
    tokens, usd = await batch_ledger(rt.pool)
    assert tokens == standin.batch_billed_tokens > 0 and standin.billed_tokens == 0
    assert usd == pytest.approx(tokens * price("openai_token_text-embedding-3-small") / 2, abs=1e-7)
    assert usd == pytest.approx(tokens * price("openai_batch_token_text-embedding-3-small"), abs=1e-7)
    assert standin.requests == []  # nothing went through the synchronous endpoint

    before = await rt.pool.fetchval("SELECT count(*) FROM events")
    assert await poll_embedding_batches(rt) == []  # nothing open any more
    assert await rt.pool.fetchval("SELECT count(*) FROM events") == before


async def test_an_expired_batch_keeps_its_finished_lines_and_a_resubmission_sends_only_the_rest(
    rt: Runtime, standin: StandIn
) -> None:
    long_doc = [f"line {i} of a long register" for i in range(2050)]  # two request lines: 2048 + 2
    short_doc = ["a short note on eels", "another on herons", "a third on otters"]
    a, b = await documents(rt, [long_doc, short_doc])
    ids = [a.document_id, b.document_id]
    standin.expire_after_lines = 1  # only the long document's first line is done before the window ends
    await submit(rt, ids, scope=None, reason="bulk")
    states = await poll_until_finished(rt)  # validating -> in_progress -> finalizing -> expired
    assert [s.status for s in states] == ["expired"]
    assert states[0].finished is not None and set(states[0].finished.incomplete_documents) == set(ids)
    cached = await of_type(rt, a, ev.EmbeddingsCached.TYPE)
    assert len(cached) == 1 and len(cached[0]["text_sha256"]) == 2048  # type: ignore[arg-type]
    failed = await of_type(rt, b, ev.EmbeddingFailed.TYPE)
    assert failed[0]["error_class"] == "BatchIncomplete" and "batch_expired" in str(failed[0]["message"])
    await catch_up_all(rt.pool, rt.dsn)
    # Nothing retries an ended batch by itself: the documents are failed (reprocess --failed finds them)
    # and search goes on answering from the vectors they had.
    assert await statuses(rt, [a, b]) == ["failed", "failed"]
    assert sorted(await select_documents(rt.pool, Selection(failed=True))) == sorted(ids)
    assert await rt.pool.fetchval("SELECT count(*) FROM vectors WHERE model = $1", OLD) == 2053
    tokens, _usd = await batch_ledger(rt.pool)
    assert tokens == standin.batch_billed_tokens > 0  # the finished line is paid and recorded

    standin.expire_after_lines = None
    again = await submit(rt, ids, scope=None, reason="finish")
    assert again.batches[0].inputs == 2 + 3  # the long document's last two texts and the short one
    states = await poll_until_finished(rt)
    assert [s.status for s in states] == ["completed"]
    for doc, n in ((a, 2050), (b, 3)):
        (embedded,) = [e for e in await of_type(rt, doc, ev.ChunksEmbedded.TYPE) if e["model"] == NEW]
        assert embedded["chunk_count"] == n
    await catch_up_all(rt.pool, rt.dsn)
    tokens, _usd = await batch_ledger(rt.pool)
    assert tokens == standin.batch_billed_tokens
    assert await rt.pool.fetchval("SELECT count(*) FROM vectors WHERE model = $1", NEW) == 2053
    assert await statuses(rt, [a, b]) == ["searchable", "searchable"]
    report = await run_checks(rt.pool)  # nothing paid twice, no blob missing
    assert not report.errors, [f.to_json() for f in report.errors]


async def test_reprocess_batch_api_goes_through_the_service_from_the_cli(
    rt: Runtime, standin: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (doc,) = await documents(rt, [["a note on kelp", "a note on gulls"]])
    for key, value in {"DATABASE_URL": rt.dsn, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": standin.url}.items():
        monkeypatch.setenv(key, value)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["reprocess", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await asyncio.to_thread(
        run, "--stage", "embed", "--model", NEW, "--document", doc.document_id, "--batch-api", "--yes", "--json"
    )
    assert code == 0, err
    answer = orjson.loads(out)
    assert len(answer["batches"]) == 1 and answer["batches"][0]["inputs"] == 2 and answer["refused"] == {}
    assert answer["quote"]["batch_api"] is True and answer["quote"]["usd"] > 0
    (request,) = [e for e in await of_type(rt, doc, ev.EmbeddingRequested.TYPE) if e["model"] == NEW]
    assert request["batch_id"] == answer["batches"][0]["batch_id"]
    assert await rt.pool.fetchval("SELECT count(*) FROM events WHERE type = $1", ev.EmbeddingBatchSubmitted.TYPE) == 1

    for argv, why in (
        (("--stage", "chunk", "--all", "--batch-api"), "--batch-api is for --stage embed"),
        (("--stage", "embed", "--model", "local:all-MiniLM-L6-v2", "--all", "--batch-api"), "runs locally"),
    ):
        code, _out, err = await asyncio.to_thread(run, *argv)
        assert code == 2 and why in err and "Traceback" not in err


async def test_a_batch_ending_after_a_new_revision_does_not_speak_for_it(rt: Runtime, standin: StandIn) -> None:
    """Batch results are for the revision whose chunk set was sent: when the document has a newer revision
    by the time the batch ends, its incomplete failure leaves the new revision's status alone."""
    (doc,) = await documents(rt, [["an old paragraph on dunes", "another on shingle"]])
    standin.expire_after_lines = 0  # the batch ends without doing anything
    await submit(rt, [doc.document_id], scope=None, reason="bulk")
    ref = await rt.blobs.put_bytes(b"%PDF-1.7 revised", "application/pdf")
    await doc.append(ev.DocumentUploaded(
        document_id=doc.document_id, filename=doc.filename, media_type="application/pdf", size=ref.size,
        sha256=ref.sha256, blob=ev.BlobRef.of(ref), source="api", key="api:dunes", revision=2,
    ))  # fmt: skip
    assert [s.status for s in await poll_until_finished(rt)] == ["expired"]
    (failed,) = await of_type(rt, doc, ev.EmbeddingFailed.TYPE)
    assert failed["error_class"] == "BatchIncomplete" and failed["revision"] == 1
    (request,) = [e for e in await of_type(rt, doc, ev.EmbeddingRequested.TYPE) if e.get("batch_id")]
    assert request["revision"] == 1
    await catch_up_all(rt.pool, rt.dsn)
    assert await statuses(rt, [doc]) == ["uploaded"]  # revision 2's, not the batch's failure
