"""``chronos reprocess --stage chunk --context-template``: changing what is embedded with each chunk is a
reprocess with an exact quote (what OpenAI then bills, to the token), the template sticks to the document,
and embed inputs that do not change stay cached (going back to an earlier template costs nothing).
OpenAI is the local stand-in server (the real SDK against it); chunking is the real chunker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from app import cli
from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.check import run_checks
from app.chunk_context import DEFAULT_TEMPLATE
from app.config import Settings
from app.errors import InvalidRequest
from app.runtime import Runtime
from app.services import reprocess
from app.services.selection import Selection
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from tests.openai_standin import StandIn, openai_standin
from tests.test_pipeline import put_bytes
from tests.test_stages_chunk import drain

pytestmark = pytest.mark.local_models

MODEL = "openai:text-embedding-3-small"
DOCS = {
    "harbour-brief.md": b"# Harbour Authority Brief, Q2 2025\n\n## Throughput\n\nThe port throughput measure rose "
    b"8.8 percent on the quarter.\n\n## Staff\n\nCrane crews were rotated twice.\n\n| Indicator | Q1 | Q2 |\n"
    b"| --- | --- | --- |\n| Vessels | 120 | 131 |\n| Tonnes | 9.1 | 9.9 |\n",
    "orchid-notes.md": b"# Orchid Survey Notes\n\nOrchids of the northern valleys bloom late in the summer.\n\n"
    b"## Method\n\nPlots were walked weekly from May to September.\n",
}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with openai_standin() as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore, standin: StandIn) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=dsn, openai_api_key="sk-test", openai_base_url=standin.url)
    yield Runtime(settings, dsn, pool, store, PgBlobStore(pool))


async def plan(rt: Runtime, ids: list[str], **kw: object) -> reprocess.Plan:
    wanted = reprocess.StageRequest(stage="chunk", **kw)  # type: ignore[arg-type]
    return await reprocess.plan(rt.pool, rt.settings, Selection(document_ids=tuple(ids)), wanted)


async def run(rt: Runtime, p: reprocess.Plan) -> None:
    await reprocess.execute(rt.pool, rt.store, rt.settings, p, actor="test")
    await drain(rt)
    await catch_up_all(rt.pool, rt.dsn)


async def billed_tokens(rt: Runtime) -> float:
    """OpenAI tokens in the ledger so far (every embed cost line)."""
    return float(
        await rt.pool.fetchval(
            "SELECT coalesce(sum((data->>'quantity')::float8), 0) FROM events WHERE type = 'CostIncurred' "
            "AND data->>'provider' = 'openai' AND data->>'stage' = 'embed'"
        )
    )


async def latest_chunked(rt: Runtime, document_id: str) -> ev.DocumentChunked:
    events = [e for e in await rt.store.read_stream_all(stream_for(document_id)) if e.type == ev.DocumentChunked.TYPE]
    from app.catalogue.codec import decode

    last = decode(events[-1])
    assert isinstance(last, ev.DocumentChunked)
    return last


async def test_a_new_template_is_quoted_exactly_sticks_and_going_back_is_free(rt: Runtime, standin: StandIn) -> None:
    ids = [(await put_bytes(rt, body, name)).document_id for name, body in DOCS.items()]
    await drain(rt)
    await catch_up_all(rt.pool, rt.dsn)
    assert (await latest_chunked(rt, ids[0])).parameters.context_template == DEFAULT_TEMPLATE
    before, sent_before = await billed_tokens(rt), len(standin.received_inputs())
    assert before > 0  # the first embedding was paid (the stand-in bills like OpenAI)

    # A new template: quoted from the chunks it will make, and billed exactly that.
    quoted = await plan(rt, ids, context_template="{title}")
    q = quoted.quote
    assert q.resource == "tokens" and q.quantity > 0 and q.usd > 0 and quoted.paid
    line = q.details["models"][MODEL]
    assert line["embed_inputs"] > 0 and line["tokens"] == q.quantity
    await run(rt, quoted)
    assert await billed_tokens(rt) - before == q.quantity
    assert len(standin.received_inputs()) - sent_before == line["embed_inputs"]
    chunked = await latest_chunked(rt, ids[0])
    assert chunked.parameters.context_template == "{title}"

    # Sticky: a re-chunk with another size keeps the document's template.
    await run(rt, await plan(rt, ids[:1], chunk_size=120))
    again = await latest_chunked(rt, ids[0])
    assert again.parameters.context_template == "{title}" and again.parameters.chunk_size <= 120

    # The same settings again: nothing new to embed, quoted at $0, nothing sent.
    await run(rt, await plan(rt, ids[:1], chunk_size=120))
    sent = len(standin.received_inputs())
    back = await plan(rt, ids, context_template=DEFAULT_TEMPLATE)  # back to the first template and size
    assert back.quote.usd == 0 and back.quote.quantity == 0
    assert back.quote.details["models"][MODEL]["cached"] == back.quote.details["chunks"] > 0
    tokens = await billed_tokens(rt)
    await run(rt, back)
    assert len(standin.received_inputs()) == sent and await billed_tokens(rt) == tokens  # all from the cache
    assert (await latest_chunked(rt, ids[0])).parameters.context_template == DEFAULT_TEMPLATE

    # Bare chunks ("" embeds the text alone): new inputs, quoted and billed alike.
    bare = await plan(rt, ids[1:], context_template="")
    assert bare.quote.quantity > 0
    await run(rt, bare)
    assert await billed_tokens(rt) - tokens == bare.quote.quantity
    assert (await latest_chunked(rt, ids[1])).parameters.context_template == ""
    report = await run_checks(rt.pool)
    assert not report.errors, [f.to_json() for f in report.errors]


async def test_a_template_naming_an_unknown_field_is_refused_before_anything_is_asked(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [doc] = [(await put_bytes(rt, DOCS["orchid-notes.md"], "orchid-notes.md")).document_id]
    await drain(rt)
    with pytest.raises(InvalidRequest, match="unknown field"):
        await plan(rt, [doc], context_template="{author}")
    with pytest.raises(InvalidRequest, match="for --stage chunk"):
        await reprocess.plan(rt.pool, rt.settings, Selection(document_ids=(doc,)),
                             reprocess.StageRequest(stage="convert", context_template="{title}"))  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", rt.dsn)
    argv = ["reprocess", "--stage", "chunk", "--document", doc, "--context-template", "{author}\\n{title}", "--yes"]
    code = await asyncio.to_thread(cli.main, argv)
    assert code == 2 and "unknown field(s) author" in capsys.readouterr().err
    assert await rt.pool.fetchval("SELECT count(*) FROM events WHERE type = 'ChunkingRequested'") == 0


async def test_the_cli_quotes_and_reads_a_line_break(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [doc] = [(await put_bytes(rt, DOCS["harbour-brief.md"], "harbour-brief.md")).document_id]
    await drain(rt)
    monkeypatch.setenv("DATABASE_URL", rt.dsn)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", rt.settings.openai_base_url or "")
    argv = ["reprocess", "--stage", "chunk", "--document", doc, "--context-template", "{title}\\n{table}", "--yes"]
    code = await asyncio.to_thread(cli.main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{MODEL}: " in out and "chunk(s) to embed" in out and "tokens $" in out
    await drain(rt)
    assert (await latest_chunked(rt, doc)).parameters.context_template == "{title}\n{table}"


async def test_documents_only_a_local_model_embeds_are_counted_not_chunked(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local model costs CPU time only: the quote counts such documents and does not chunk them."""
    import app.services.chunk_quote as chunk_quote

    [doc] = [(await put_bytes(rt, DOCS["orchid-notes.md"], "orchid-notes.md")).document_id]
    await drain(rt)

    async def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("a document embedded locally was chunked for a quote")

    monkeypatch.setattr(chunk_quote, "chunk_conversion", refuse)
    local = Settings(database_url=rt.dsn)  # no OpenAI key: the default model is the local one
    wanted = reprocess.StageRequest(stage="chunk", context_template="{title}")
    q = (await reprocess.plan(rt.pool, local, Selection(document_ids=(doc,)), wanted)).quote
    assert q.usd == 0 and q.resource is None and q.details["local_documents"] == 1
