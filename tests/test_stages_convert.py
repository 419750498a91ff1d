"""The convert stage goes through the recovery ladder (app.convert.recovery): a document that fails
for time is retried in page slices or on the other backend within one job, and ends quarantined
(one final ConversionFailed with the reason) when nothing works -- never retried the same way 4 times.
Modal outages fall back to local Docling and the events say so. Real local Docling, real database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.convert.backends import modal_breaker
from app.runtime import Runtime
from events import EventStore, PgBlobStore
from tests.convert_support import timeout_above
from tests.test_pipeline import drive, put_bytes, put_file

pytestmark = pytest.mark.local_models

TINY = 0.001  # seconds: no conversion finishes in time


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


@pytest.fixture
def tiny_timeout_above(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Real local conversions of more than ``pages`` pages (or whole files) get a tiny timeout."""
    return timeout_above(monkeypatch, TINY)


@pytest.fixture
def modal_unreachable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Modal configured (tokens set) but its servers cannot be reached."""
    import modal
    import modal.exception as mex

    def from_name(*_: Any, **__: Any) -> Any:
        raise mex.ConnectionError("Could not connect to the Modal server.")

    monkeypatch.setattr(modal.Cls, "from_name", from_name)
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    modal_breaker.reset()
    yield
    modal_breaker.reset()


async def events_of(rt: Runtime, document_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await rt.store.read_stream(stream_for(document_id)) if e.type == kind]


async def test_unsliceable_timeout_is_quarantined_at_once(rt: Runtime, tiny_timeout_above: Any) -> None:
    """A Markdown file that times out has no pages to slice and no other backend: one final failure."""
    seen = tiny_timeout_above(0)
    up = await put_bytes(rt, b"# Huge\n\n" + b"word " * 2000, "huge.md")
    statuses = await drive(rt, [up.document_id], timeout=120)
    assert statuses[up.document_id] == "failed"
    [failed] = await events_of(rt, up.document_id, ev.ConversionFailed.TYPE)
    assert failed["error_class"] == "Timeout" and failed["final"] and not failed["retryable"]
    assert failed["backend"] == "local" and failed["attempt"] == 1
    assert seen == [None]  # converted once, not 4 times 5 minutes the same way
    job = await rt.pool.fetchrow("SELECT status, attempts FROM jobs WHERE document_id = $1::uuid", up.document_id)
    assert job is not None
    assert (job["status"], job["attempts"]) == ("failed", 1)


async def test_pdf_timeout_is_converted_in_page_slices(rt: Runtime, corpus: Path, tiny_timeout_above: Any) -> None:
    seen = tiny_timeout_above(3)
    up = await put_file(rt, corpus / "pdf" / "multi_page.pdf")
    statuses = await drive(rt, [up.document_id], timeout=180)
    assert statuses[up.document_id] == "searchable"
    [converted] = await events_of(rt, up.document_id, ev.DocumentConverted.TYPE)
    assert converted["slices"] == [[1, 3], [4, 5]] and converted["page_count"] == 5
    assert seen == [None, (1, 3), (4, 5)]
    assert not await events_of(rt, up.document_id, ev.ConversionFailed.TYPE)


async def test_modal_unreachable_falls_back_to_local_and_says_why(
    rt: Runtime, corpus: Path, modal_unreachable: None
) -> None:
    pdf = await put_file(rt, corpus / "pdf" / "multi_page.pdf")
    md = await put_bytes(rt, b"# Local\n\nMarkdown needs no GPU: converted locally, Modal or not.\n", "local.md")
    statuses = await drive(rt, [pdf.document_id, md.document_id], timeout=120)
    assert statuses == {pdf.document_id: "searchable", md.document_id: "searchable"}
    [converted] = await events_of(rt, pdf.document_id, ev.DocumentConverted.TYPE)
    assert converted["backend"] == "local"
    assert converted["fallback"]["from_backend"] == "modal" and converted["fallback"]["reason"] == "unreachable"
    assert "Modal" in converted["fallback"]["message"]
    [local] = await events_of(rt, md.document_id, ev.DocumentConverted.TYPE)
    assert local["backend"] == "local" and local["fallback"] is None  # never sent to Modal


async def test_failure_after_modal_fallback_records_both(
    rt: Runtime, modal_unreachable: None, tiny_timeout_above: Any
) -> None:
    """Modal down, then local times out on a file that cannot be sliced: quarantined, fallback recorded."""
    tiny_timeout_above(0)
    up = await put_bytes(rt, b"# Slow\n\n" + b"text " * 5000, "slow.md")
    statuses = await drive(rt, [up.document_id], timeout=120)
    assert statuses[up.document_id] == "failed"
    [failed] = await events_of(rt, up.document_id, ev.ConversionFailed.TYPE)
    assert failed["final"] and failed["error_class"] == "Timeout" and failed["backend"] == "local"
    assert failed["fallback"]["reason"] == "unreachable"
