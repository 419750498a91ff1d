"""One slow document does not hold back the others (issue 11 item 5).

* The converter pool starts an extra process while every process is busy with a slow document, and
  stops it when it is handed back.
* A worker lets a slow convert job step aside: the next document converts beside it; empty and
  unsupported uploads never wait for a convert slot and never take a converter.

No timing is asserted: each test waits for an *order* of events (the small document is done while the
slow one is still running), with a generous bound that only a stall reaches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from app.config import Settings
from app.convert import ConvertOptions
from app.convert.errors import ConversionFailure
from app.convert.local import Cancelled, ConverterPool
from app.convert.sniff import HTML, MARKDOWN
from app.runtime import Runtime
from app.services.documents import document_states
from events import EventStore, PgBlobStore
from tests.convert_support import intercept_conversions
from tests.test_pipeline import drive, put_bytes

pytestmark = pytest.mark.local_models

HOSTILE = ("<html><body>" + "<div>" * 50_000 + "x" + "</div>" * 50_000 + "</body></html>").encode()


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


def test_an_extra_converter_starts_while_the_only_one_is_slow(tmp_path: Path) -> None:
    """A pool of one process: the hostile HTML (it runs for minutes in Docling) holds it; a small
    Markdown file converts in an extra process and is done while the hostile one is still running."""
    hostile, small = tmp_path / "hostile.html", tmp_path / "small.md"
    hostile.write_bytes(HOSTILE)
    small.write_text("# Small\n\nA small document that should not wait.\n")
    pool = ConverterPool(size=1, burst=1, slow_after=0.5)
    options = ConvertOptions(backend="local", timeout_s=600)
    cancel = threading.Event()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            slow = ex.submit(pool.convert, hostile, HTML, options, None, cancel)
            while pool.started == 0 and not slow.done():
                time.sleep(0.05)  # the hostile document has the pool's only process
            out = ex.submit(pool.convert, small, MARKDOWN, options).result(timeout=300)
            assert "small document" in out.markdown
            assert not slow.done(), "the hostile document finished first: nothing was shown"
            assert pool.bursts == 1 and pool.started == 2
            assert pool._live == 1 and not pool._idle  # the extra process was stopped when handed back
            cancel.set()
            with pytest.raises((Cancelled, ConversionFailure)):
                slow.result(timeout=60)
    finally:
        cancel.set()
        pool.close()


def test_no_extra_converter_while_conversions_are_quick(tmp_path: Path) -> None:
    small = tmp_path / "small.md"
    small.write_text("# Small\n\nQuick.\n")
    pool = ConverterPool(size=1, burst=1, slow_after=600)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            outs = list(ex.map(lambda _: pool.convert(small, MARKDOWN, ConvertOptions(backend="local")), range(3)))
        assert len(outs) == 3 and pool.started == 1 and pool.bursts == 0
    finally:
        pool.close()


@pytest.fixture
def slow_conversion(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Conversions of files containing ``SLOW`` block until released (or cancelled); every call is
    recorded with the media type it converts. Convert jobs count as slow after 0.5 s."""
    monkeypatch.setenv("CHRONOS_CONVERT_SLOW_S", "0.5")
    release = threading.Event()
    calls: list[str] = []

    def hold(
        path: Path, media_type: str, options: ConvertOptions, page_range: tuple[int, int] | None,
        cancel: threading.Event | None,
    ) -> ConvertOptions:  # fmt: skip
        data = path.read_bytes()
        calls.append("slow" if b"SLOW" in data else media_type)
        if b"SLOW" in data:
            while not release.is_set() and not (cancel is not None and cancel.is_set()):
                release.wait(0.05)
        return options

    intercept_conversions(monkeypatch, hold)
    yield release, calls
    release.set()


async def test_a_slow_conversion_does_not_stall_the_others(rt: Runtime, slow_conversion: Any) -> None:
    """Uploaded behind a conversion that does not finish: an empty file and an executable fail (with
    their reasons, no converter), and a small Markdown file becomes searchable, while it still runs."""
    release, calls = slow_conversion
    slow = await put_bytes(rt, b"# SLOW\n\nThis one takes as long as it takes.\n", "slow.md")
    empty = await put_bytes(rt, b"", "empty.md")
    tool = await put_bytes(rt, b"\x7fELF\x02\x01\x01" + os.urandom(4096), "tool.md")
    small = await put_bytes(rt, b"# Small\n\nA small document behind the slow one.\n", "small.md")
    others = [empty.document_id, tool.document_id, small.document_id]
    blocked_when_done: list[bool] = []

    async def release_when_the_others_are_final() -> None:
        while True:
            states = await document_states(rt.pool, others)
            if len(states) == 3 and all(s.final for s in states.values()):
                blocked_when_done.append(not release.is_set() and "slow" in calls)
                release.set()
                return
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(release_when_the_others_are_final())
    try:
        statuses = await drive(rt, [slow.document_id, *others], timeout=300)
    finally:
        release.set()
        watcher.cancel()
    assert blocked_when_done == [True], "the others were not done while the slow conversion ran"
    assert statuses[slow.document_id] == "searchable" and statuses[small.document_id] == "searchable"
    states = await document_states(rt.pool, [empty.document_id, tool.document_id])
    assert states[empty.document_id].error_class == "EmptyFile"
    assert states[tool.document_id].error_class == "UnsupportedMediaType"
    assert sorted(calls) == sorted(["slow", MARKDOWN])  # the empty file and the executable took no converter
