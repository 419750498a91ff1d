"""Documents that change (docs/revisions.md): new content under a key is a new revision of the same
document; search switches to it atomically when it is searchable (never both, never neither); a failed
revision leaves the last good one answering; unchanged chunks reuse their embeddings; search as of a
past moment answers with what served then; replay rebuilds all of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.embedders import get_embedder
from app.runtime import Runtime
from app.services.documents import document_states
from app.services.search import search_vector
from app.services.upload import IntakeResult, ingest_stream
from events import EventStore, PgBlobStore
from events.blobs import aiter_bytes
from projections.runner import catch_up_all
from tests.test_pipeline import drive
from tests.test_replay import projection_hashes

pytestmark = pytest.mark.local_models
MODEL = "local:all-MiniLM-L6-v2"
KEY = "api:ferry-timetable"


def timetable(departure: str, extra: str = "") -> bytes:
    sections = [f"## Section {i}\n\n" + f"Harbour note {i}: the pier lamps are checked every evening. " * 6
                for i in range(8)]  # fmt: skip
    body = "\n\n".join(sections)
    return f"# Ferry timetable\n\nThe morning ferry leaves the north pier at {departure}.{extra}\n\n{body}\n".encode()


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def put(rt: Runtime, content: bytes, key: str = KEY, name: str = "ferry.md") -> IntakeResult:
    return await ingest_stream(rt.store, rt.blobs, aiter_bytes(content), filename=name, source="api", actor="test",
                               key=key)  # fmt: skip


async def departures(rt: Runtime, question: np.ndarray, doc: str) -> set[str]:
    """Which departure times search shows for the document right now."""
    hits = await search_vector(rt.pool, question, 20, MODEL)
    text = " ".join(h.text for h in hits if h.document_id == doc)
    return {t for t in ("7:15", "8:40") if t in text}


async def question_vector() -> np.ndarray:
    embedder = await asyncio.to_thread(get_embedder, MODEL, Settings())
    return (await embedder.embed(["When does the morning ferry leave the north pier?"])).vectors[0]


async def test_new_content_under_a_key_is_a_revision_and_search_switches_atomically(rt: Runtime) -> None:
    first = await put(rt, timetable("7:15"))
    assert (first.created, first.revision) == (True, 1)
    assert (await drive(rt, [first.document_id]))[first.document_id] == "searchable"
    await catch_up_all(rt.pool, rt.dsn)
    question = await question_vector()
    assert await departures(rt, question, first.document_id) == {"7:15"}
    before = await rt.pool.fetchval("SELECT max(position) FROM events")

    same = await put(rt, timetable("7:15"))
    assert (same.document_id, same.created, same.revision) == (first.document_id, False, 1)
    second = await put(rt, timetable("8:40"), name="ferry-v2.md")
    assert (second.document_id, second.created, second.revision) == (first.document_id, True, 2)
    assert (await drive(rt, [second.document_id]))[second.document_id] == "searchable"

    # Readers search in a loop while the projections apply the new revision: each look sees exactly one.
    seen: list[set[str]] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            seen.append(await departures(rt, question, first.document_id))
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    try:
        await catch_up_all(rt.pool, rt.dsn)
        await asyncio.sleep(0.05)
    finally:
        done.set()
        await task
    assert seen and all(s in ({"7:15"}, {"8:40"}) for s in seen), [s for s in seen if len(s) != 1][:3]
    assert await departures(rt, question, first.document_id) == {"8:40"}
    row = await rt.pool.fetchrow("SELECT status, revision, serving_revision, filename FROM documents")
    assert row is not None and tuple(row) == ("searchable", 2, 2, "ferry-v2.md")
    assert await rt.pool.fetchval("SELECT count(*) FROM documents") == 1

    # As of a moment before the edit, search answers from revision 1; now, from revision 2.
    rows = await rt.pool.fetch("SELECT text FROM search_chunks_as_of($1::vector, 20, $2, $3)",
                               np.asarray(question, np.float32), MODEL, before)  # fmt: skip
    assert any("7:15" in r["text"] for r in rows) and not any("8:40" in r["text"] for r in rows)
    now = await rt.pool.fetchval("SELECT max(position) FROM events")
    rows = await rt.pool.fetch("SELECT text FROM search_chunks_as_of($1::vector, 20, $2, $3)",
                               np.asarray(question, np.float32), MODEL, now)  # fmt: skip
    assert any("8:40" in r["text"] for r in rows) and not any("7:15" in r["text"] for r in rows)

    # Unchanged chunks reused their embeddings: the edit paid only for the chunks it changed.
    embedded = [e.data for e in await rt.store.read_stream(stream_for(first.document_id))
                if e.type == ev.ChunksEmbedded.TYPE]  # fmt: skip
    assert [e["revision"] for e in embedded] == [1, 2]
    assert embedded[1]["reused_count"] >= embedded[1]["chunk_count"] - 2, embedded[1]
    assert embedded[0]["reused_count"] == 0

    # Replay rebuilds exactly the same projections, history included.
    before_replay = await projection_hashes(rt.pool)
    from projections.replay import replay

    await replay(rt.pool, rt.dsn, progress=False)
    assert await projection_hashes(rt.pool) == before_replay


async def test_a_failed_revision_leaves_the_last_good_one_answering(rt: Runtime) -> None:
    first = await put(rt, timetable("7:15"))
    assert (await drive(rt, [first.document_id]))[first.document_id] == "searchable"
    broken = await put(rt, b"\x7fELF\x02\x01\x01" + bytes(500), name="ferry.bin")  # not a document
    assert broken.revision == 2
    assert (await drive(rt, [first.document_id]))[first.document_id] == "failed"
    await catch_up_all(rt.pool, rt.dsn)
    assert await departures(rt, await question_vector(), first.document_id) == {"7:15"}
    row = await rt.pool.fetchrow("SELECT status, revision, serving_revision, error_class FROM documents")
    assert row is not None and tuple(row) == ("failed", 2, 1, "UnsupportedMediaType")
    state = (await document_states(rt.pool, [first.document_id]))[first.document_id]
    assert state.failure and "application/x-executable" in state.failure


async def test_work_for_an_older_revision_is_superseded(rt: Runtime) -> None:
    first = await put(rt, timetable("7:15"))
    second = await put(rt, timetable("8:40"))  # before revision 1 was even converted
    assert (await drive(rt, [first.document_id]))[first.document_id] == "searchable"
    await catch_up_all(rt.pool, rt.dsn)
    events = await rt.store.read_stream(stream_for(second.document_id))
    converted = [e.data.get("revision") for e in events if e.type == ev.DocumentConverted.TYPE]
    assert converted == [2], "revision 1's conversion was superseded before it started"
    cancelled = await rt.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE status = 'cancelled' AND last_error LIKE 'superseded by revision 2%'"
    )
    assert cancelled == 1
    assert await departures(rt, await question_vector(), first.document_id) == {"8:40"}
