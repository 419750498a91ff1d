"""Calls to the Modal converter: concurrent convert jobs share one call (batching), only documents
that need the GPU are sent, a call past its timeout is cancelled (and its cost recorded), the
container never runs past the client's deadline, and Docling's document timeout is a failure that
goes down the recovery ladder -- never a truncated success. The remote side is the real function
body behind a stand-in with Modal's call semantics (tests/modal_standin.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.convert import ConversionFailure, ConvertOptions, container, convert_batch, convert_with_recovery
from app.convert import batcher as batching
from app.convert.modal_client import ModalItem, ModalUnavailable, call_modal
from app.convert.options import ConversionOutput
from app.convert.sniff import PDF, sniff_path
from app.pipeline.backend import backend_services
from app.pipeline.worker import Worker
from app.runtime import Runtime
from app.supervisor import Supervisor
from events import EventStore, PgBlobStore
from tests.conftest import CORPUS
from tests.convert_support import timeout_above
from tests.modal_standin import deploy
from tests.test_pipeline import put_file

__all__ = ["deploy"]  # the fixture

pytestmark = pytest.mark.local_models

MULTI = CORPUS / "pdf" / "multi_page.pdf"  # 5 pages
MODAL = ConvertOptions(backend="modal")


@pytest_asyncio.fixture(loop_scope="session")
async def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> AsyncIterator[Runtime]:
    yield Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


@pytest.fixture
def fresh_batcher(monkeypatch: pytest.MonkeyPatch) -> Any:
    """This loop's batcher rebuilt with the given caps (restored afterwards)."""

    def install(**caps: Any) -> None:
        for name, value in caps.items():
            monkeypatch.setattr(batching, name, value)
        batching._batchers.clear()

    yield install
    batching._batchers.clear()


async def converted(rt: Runtime, ids: list[str], timeout: float = 240) -> dict[str, dict[str, Any]]:
    """Wait until every document has a DocumentConverted or ConversionFailed; {id: its data}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await rt.pool.fetch(
            "SELECT stream_id, type, data FROM events WHERE type = ANY($1::text[]) AND stream_id = ANY($2::text[])",
            [ev.DocumentConverted.TYPE, ev.ConversionFailed.TYPE],
            [stream_for(d) for d in ids],
        )
        done = {r["stream_id"].removeprefix("document-"): {"type": r["type"], **r["data"]} for r in rows}
        if len(done) == len(ids):
            return done
        await asyncio.sleep(0.3)
    raise AssertionError(f"not converted after {timeout}s")


async def costs_of(rt: Runtime, document_id: str) -> list[dict[str, Any]]:
    rows = await rt.pool.fetch(
        "SELECT data FROM events WHERE type = 'CostIncurred' AND stream_id = $1 ORDER BY position",
        stream_for(document_id),
    )
    return [dict(r["data"]) for r in rows]


async def run_convert_worker(rt: Runtime, ids: list[str], concurrency: int) -> dict[str, dict[str, Any]]:
    stop = asyncio.Event()
    worker = Worker(rt, stages=("convert",), concurrency=concurrency, poll_interval=0.2)
    services = backend_services(rt, worker, projections=False, warm=False)
    task = asyncio.create_task(Supervisor(services).run(stop))
    try:
        return await converted(rt, ids)
    finally:
        stop.set()
        await task


async def test_concurrent_convert_jobs_share_one_modal_call(rt: Runtime, deploy: Any, fresh_batcher: Any) -> None:
    """Four convert jobs running side by side in one worker: one call, one container start. (The wait
    window is long here so the count cap, not timing, closes the batch.)"""
    fresh_batcher(MAX_DOCS=4, WAIT_S=60.0)
    fake = deploy()
    names = ["multi_page.pdf", "normal_4pages.pdf", "2305.03393v1-pg9.pdf", "right_to_left_01.pdf"]
    ids = [(await put_file(rt, CORPUS / "pdf" / name)).document_id for name in names]
    done = await run_convert_worker(rt, ids, concurrency=4)
    assert fake.documents_sent == [4]
    assert all(d["type"] == ev.DocumentConverted.TYPE and d["backend"] == "modal" for d in done.values()), done
    gpu_lines = [c for d in ids for c in await costs_of(rt, d) if c["resource"] == "gpu_seconds"]
    assert len(gpu_lines) == 4
    assert {c["details"]["batch_documents"] for c in gpu_lines} == {4}
    assert {c["details"]["container"] for c in gpu_lines} == {fake.replies[0]["container"]["id"]}
    # The batch's whole container time (cold start + run + one idle window) is shared out, once.
    call = fake.replies[0]["call"]
    held = call["held_before_s"] + call["run_s"] + fake.replies[0]["container"]["scaledown_s"]
    assert sum(c["quantity"] for c in gpu_lines) == pytest.approx(held, abs=0.01)


def fake_send(calls: list[list[str]]) -> Any:
    async def send(items: list[ModalItem], timeout_s: float, gpu: str) -> list[Any]:
        calls.append([i.filename for i in items])
        return [i.filename for i in items]

    return send


async def test_batch_caps_count_bytes_and_timeouts(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    files = []
    for n, size in enumerate([10, 10, 10, 10, 10, 30, 60]):
        path = tmp_path / f"f{n}.pdf"
        path.write_bytes(b"x" * size)
        files.append(ModalItem(path, path.name, PDF, "default"))
    b = batching.Batcher(fake_send(calls), max_docs=2, max_bytes=50, wait_s=3600)
    # count cap: 2 per call; bytes: 10+30 fits, +60 does not (and 60 > 50 travels alone)
    got = await asyncio.gather(*(b.submit(item, 600.0) for item in files))
    assert got == [i.filename for i in files]  # every submitter gets its own document's outcome
    assert calls == [["f0.pdf", "f1.pdf"], ["f2.pdf", "f3.pdf"], ["f4.pdf", "f5.pdf"], ["f6.pdf"]]
    calls.clear()
    # different call timeouts never share a call; an incomplete batch goes when its window ends
    short = batching.Batcher(fake_send(calls), max_docs=8, max_bytes=10**6, wait_s=0.01)
    await asyncio.gather(short.submit(files[0], 600.0), short.submit(files[1], 30.0), short.submit(files[2], 600.0))
    assert sorted(calls) == [["f0.pdf", "f2.pdf"], ["f1.pdf"]]


async def test_only_documents_that_need_the_gpu_go_to_modal(deploy: Any) -> None:
    fake = deploy()
    files = [MULTI, CORPUS / "docx" / "word_sample.docx", CORPUS / "md" / "duck.md"]
    files += sorted((CORPUS / "pptx").glob("*.pptx"))[:1] + sorted((CORPUS / "xlsx").glob("*.xlsx"))[:1]
    files += sorted((CORPUS / "html").glob("*.html"))[:1] + sorted((CORPUS / "csv").glob("*.csv"))[:1]
    items = [(p, p.name, sniff_path(p)) for p in files]
    results = await convert_batch(items, MODAL)
    assert [r.backend for r in results] == ["modal"] + ["local"] * (len(files) - 1)
    assert fake.documents_sent == [1] and fake.calls[0].items[0]["filename"] == MULTI.name
    # a PDF asked for with the model-free native pipeline needs no GPU either
    [native] = await convert_batch([(MULTI, "m.pdf", PDF)], ConvertOptions(backend="modal", pipeline="native"))
    assert native.backend == "local" and native.fallback is None and fake.documents_sent == [1]


async def test_a_call_past_its_timeout_is_cancelled_and_its_cost_recorded(
    rt: Runtime, deploy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client gives up after CHRONOS_MODAL_TIMEOUT: the call is cancelled (its container terminated),
    the document converts locally, and the Modal time until the cancel is in the ledger."""

    async def hang(items: list[dict[str, Any]], deadline_unix: float | None) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}

    fake = deploy(hang)
    monkeypatch.setenv("CHRONOS_MODAL_TIMEOUT", "1")
    up = await put_file(rt, MULTI)
    spawned_at = time.time()
    done = await run_convert_worker(rt, [up.document_id], concurrency=2)
    elapsed = time.time() - spawned_at
    data = done[up.document_id]
    assert data["type"] == ev.DocumentConverted.TYPE and data["backend"] == "local"
    assert data["fallback"]["reason"] == "timeout" and "cancelled" in data["fallback"]["message"]
    [call] = fake.calls
    assert call.cancelled_with == {"terminate_containers": True} and call.task.cancelled()
    assert call.deadline_unix is not None and call.deadline_unix <= spawned_at + 1 + 1  # the client's deadline
    costs = await costs_of(rt, up.document_id)
    lines = {c["resource"]: c for c in costs}
    assert len(costs) == len(lines) == 4  # one line per resource: nothing counted twice
    assert set(lines) == {"gpu_seconds", "cpu_core_seconds", "memory_gib_seconds", "cpu_seconds"}
    gpu = lines["gpu_seconds"]
    assert gpu["provider"] == "modal" and gpu["details"]["cancelled"] == 1
    # held from the spawn until the cancel: the timeout's second less what passed before the spawn (a
    # moment, or more on a loaded machine), never more than the test waited
    assert 0 < gpu["quantity"] <= elapsed
    assert lines["cpu_seconds"]["provider"] == "local"  # and the local conversion that replaced it


class FakeClock:
    """``time.time`` for the container: advances only when a document is converted."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def test_the_container_never_starts_a_document_it_cannot_finish_before_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(container, "time", clock)

    class Engine:
        def convert(self, path: Path, media_type: str, pipeline: str, page_range: Any) -> Any:
            clock.now += 50.0  # every document takes 50 s
            return container_result()

    state = container.ContainerState(
        engine=Engine(),  # type: ignore[arg-type]
        container_id="c1",
        gpu="L4",
        device="cuda:0",
        device_name="NVIDIA L4",
        cpu_cores=4.0,
        memory_mib=12288,
        scaledown_s=60.0,
        function_timeout_s=540.0,
        document_timeout_s=100.0,
        started_at=clock.now - 30.0,
        ready_at=clock.now - 5.0,
    )
    items = [{"filename": f"{n}.pdf", "media_type": PDF, "data": b"%PDF-", "pipeline": "default"} for n in range(5)]
    deadline = clock.now + 200.0 + container.SAFETY_S
    reply = container.run_batch(state, items, deadline)
    started = [not r.get("not_started") for r in reply["results"]]
    # 0, 50, 100 s: each can finish (at its 100 s limit) by 200 s; at 150 s the fourth cannot
    assert started == [True, True, True, False, False]
    shares = [r["usage"]["container_s"] for r in reply["results"][:3]]
    assert sum(shares) == pytest.approx(30.0 + 150.0 + 60.0)  # cold start + run + one idle window
    assert all(r["usage"]["started_container"] for r in reply["results"][:3])
    # The next call on this container, 20 s later, pays that idle gap, not another window.
    clock.now += 20.0
    again = container.run_batch(state, items[3:], None)
    assert [r["usage"]["container_s"] for r in again["results"]] == [pytest.approx(50.0 + 10.0)] * 2
    assert not again["results"][0]["usage"]["started_container"]


def container_result() -> Any:
    from app.convert.engine import EngineResult

    return EngineResult(docling_json=b"{}", markdown="text", page_count=1, pipeline="standard", convert_s=50.0)


async def test_documents_a_call_had_no_time_for_are_sent_again(deploy: Any) -> None:
    fake = deploy()
    real = fake.body

    def first_call_starts_only_one(items: list[dict[str, Any]], deadline_unix: float | None) -> Any:
        reply = real().convert.local(items, deadline_unix)
        if len(fake.calls) == 1:
            for r in reply["results"][1:]:
                r.clear()
                r.update(ok=False, not_started=True)
        return reply

    fake.behaviour = lambda items, deadline: asyncio.to_thread(first_call_starts_only_one, items, deadline)
    items = [ModalItem(MULTI, f"m{n}.pdf", PDF, "default") for n in range(3)]
    outcomes = await call_modal(items, 600.0)
    assert fake.documents_sent == [3, 2]
    assert all(isinstance(o, ConversionOutput) and o.backend == "modal" and o.page_count == 5 for o in outcomes)


@pytest.fixture
def tiny_local_timeout_above(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Real local conversions of more than ``pages`` pages (or whole files) get a tiny timeout."""
    return timeout_above(monkeypatch, 0.02)


async def test_doclings_document_timeout_on_modal_goes_down_the_ladder(
    deploy: Any, monkeypatch: pytest.MonkeyPatch, tiny_local_timeout_above: Any
) -> None:
    """On Modal, Docling stops at its document timeout and returns PARTIAL_SUCCESS with the pages it had:
    that is a Timeout failure (with its Modal cost), then local, then page slices -- a 5-page result."""
    monkeypatch.setenv("CHRONOS_MODAL_DOCUMENT_TIMEOUT", "0.000001")  # the container's Docling limit
    fake = deploy()
    seen = tiny_local_timeout_above(3)
    out = await convert_with_recovery(MULTI, filename="m.pdf", media_type=PDF, options=MODAL)
    [reply] = fake.replies
    assert reply["results"][0]["failure"]["error_class"] == "Timeout"
    assert "truncated document is not accepted" in reply["results"][0]["failure"]["message"]
    assert seen == [None, (1, 3), (4, 5)]  # local whole (timed out), then slices
    assert out.backend == "local" and out.page_count == 5 and out.slices == [[1, 3], [4, 5]]
    assert len(out.modal_usage) == 1 and out.modal_usage[0].container_s > 0  # the Modal attempt is paid for


async def test_a_failure_on_modal_records_its_cost_with_the_failure(rt: Runtime, deploy: Any) -> None:
    deploy()
    up = await put_file(rt, CORPUS / "pdf" / "password_protected_2206.01062_pg3.pdf")
    done = await run_convert_worker(rt, [up.document_id], concurrency=2)
    failed = done[up.document_id]
    assert failed["type"] == ev.ConversionFailed.TYPE and failed["error_class"] == "PasswordProtected"
    lines = await costs_of(rt, up.document_id)
    assert {c["resource"] for c in lines} == {"gpu_seconds", "cpu_core_seconds", "memory_gib_seconds"}
    event_id = await rt.pool.fetchval(
        "SELECT event_id FROM events WHERE type = 'ConversionFailed' AND stream_id = $1", stream_for(up.document_id)
    )
    assert {c["caused_by"] for c in lines} == {str(event_id)}


async def test_unavailable_is_per_document_and_keeps_finished_results(deploy: Any) -> None:
    """A second call (for documents the first had no time for) that fails leaves the finished ones."""
    fake = deploy()
    real = fake.body

    def behaviour(items: list[dict[str, Any]], deadline_unix: float | None) -> Any:
        if len(fake.calls) > 1:
            raise ConnectionError("connection reset")
        reply = real().convert.local(items, deadline_unix)
        reply["results"][1].clear()
        reply["results"][1].update(ok=False, not_started=True)
        return reply

    fake.behaviour = lambda items, deadline: asyncio.to_thread(behaviour, items, deadline)
    first, second = await call_modal(
        [ModalItem(MULTI, "a.pdf", PDF, "default"), ModalItem(MULTI, "b.pdf", PDF, "default")], 600.0
    )
    assert isinstance(first, ConversionOutput) and isinstance(second, ModalUnavailable)
    assert second.reason == "unreachable" and not isinstance(second, ConversionFailure)


async def test_cost_lines_price_the_gpu_the_deployment_reports(
    rt: Runtime, deploy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own CHRONOS_MODAL_GPU says A10G; the deployment says T4: T4 is what is billed."""
    from app import costs

    monkeypatch.delenv("CHRONOS_MODAL_GPU", raising=False)
    deploy(reply_gpu="T4")
    up = await put_file(rt, MULTI)
    done = await run_convert_worker(rt, [up.document_id], concurrency=2)
    assert done[up.document_id]["gpu"] == "T4"
    lines = {c["resource"]: c for c in await costs_of(rt, up.document_id)}
    gpu, cpu, mem = lines["gpu_seconds"], lines["cpu_core_seconds"], lines["memory_gib_seconds"]
    assert gpu["unit_price_usd"] == costs.price("modal_gpu_second_t4") and gpu["details"]["gpu"] == "T4"
    seconds = gpu["quantity"]
    assert cpu["quantity"] == pytest.approx(seconds * 4.0) and cpu["unit_price_usd"] == costs.price(
        "modal_cpu_core_second"
    )
    assert mem["quantity"] == pytest.approx(seconds * 12.0) and mem["unit_price_usd"] == costs.price(
        "modal_memory_gib_second"
    )
    # the container time includes the cold start and the idle window the batch left behind
    assert gpu["details"]["cold_start_s"] > 0 and gpu["details"]["idle_s"] == 60.0
    assert set(lines) == {"gpu_seconds", "cpu_core_seconds", "memory_gib_seconds"}  # no local line


async def test_a_native_pipeline_pdf_is_sliced_locally_not_sent_to_modal(
    deploy: Any, tiny_local_timeout_above: Any
) -> None:
    fake = deploy()
    seen = tiny_local_timeout_above(3)
    out = await convert_with_recovery(
        MULTI, filename="m.pdf", media_type=PDF, options=ConvertOptions(backend="auto", pipeline="native")
    )
    assert out.backend == "local" and out.slices == [[1, 3], [4, 5]] and seen == [None, (1, 3), (4, 5)]
    assert fake.calls == []


def test_several_modal_attempts_of_one_result_are_one_line_per_resource() -> None:
    from app import costs
    from app.convert.options import ModalUsage

    first = ModalUsage(gpu="L4", container_s=10.0, cpu_cores=4.0, memory_gib=12.0, idle_s=6.0, cancelled=True)
    second = ModalUsage(gpu="L4", container_s=5.0, cpu_cores=4.0, memory_gib=12.0, cold_start_s=2.0)
    lines = costs.modal_usages([first, second])
    assert [line.resource for line in lines] == ["gpu_seconds", "cpu_core_seconds", "memory_gib_seconds"]
    assert lines[0].quantity == 15.0 and lines[1].quantity == 60.0 and lines[2].quantity == 180.0
    assert lines[0].details is not None and lines[0].details["cancelled"] == 1
    assert lines[0].details["idle_s"] == 6.0 and lines[0].details["cold_start_s"] == 2.0
