"""The convert part of the reprocess quote: quoted whenever the backend resolves to Modal (``auto``
with tokens too), for the documents that would go there, at the GPU the deployment has, with the
container's CPU and memory and its cold starts and idle windows."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import asyncpg
import pytest

from app import costs
from app.services.reprocess import StageRequest
from app.services.reprocess import quote as service_quote

PDF = "application/pdf"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
TOKENS = {"MODAL_TOKEN_ID": "ak-x", "MODAL_TOKEN_SECRET": "as-x"}


async def document(pool: asyncpg.Pool, media_type: str, pages: int) -> str:
    doc = str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO documents (document_id, filename, status, media_type, page_count, stream_version, "
        "last_position) VALUES ($1, $2, 'searchable', $3, $4, 1, 1)",
        doc,
        f"{doc}.bin",
        media_type,
        pages,
    )
    return doc


async def ledger_line(pool: asyncpg.Pool, doc: str, seconds: float, gpu: str) -> None:
    await pool.execute(
        "INSERT INTO cost_ledger (position, event_id, document_id, stage, provider, resource, quantity, "
        "unit_price_usd, amount_usd, details, recorded_at) VALUES ((SELECT coalesce(max(position), 0) + 1 FROM "
        "cost_ledger), $1, $2, 'convert', 'modal', 'gpu_seconds', $3, 0, 0, $4, now())",
        uuid.uuid4(),
        doc,
        seconds,
        {"gpu": gpu, "cpu_cores": 2.0, "memory_gib": 8.0},
    )


def args(backend: str | None) -> argparse.Namespace:
    return argparse.Namespace(backend=backend, model=None)


async def quote(pool: asyncpg.Pool, stage: str, ids: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """The reprocess quote as `chronos reprocess --json` prints it."""
    request = StageRequest(stage=stage, backend=a.backend, model=a.model)  # type: ignore[arg-type]
    return (await service_quote(pool, request, ids)).to_json()


async def test_auto_with_modal_configured_is_quoted(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [await document(pool, PDF, 10), await document(pool, PDF, 30)]
    for key, value in TOKENS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CHRONOS_MODAL_GPU", raising=False)
    quoted = await quote(pool, "convert", ids, args(None))  # the CLI's default backend is auto
    assert quoted["usd"] > 0
    from app.convert import quote as convert_quote

    assert quoted["gpu"] == "A10G" and quoted["basis"] == "estimate"
    # 40 pages at the expected speed, plus one batch's cold start and idle window, at the full rate
    seconds = 40 / convert_quote.EXPECTED_PAGES_PER_S["A10G"] + convert_quote.EXPECTED_COLD_START_S + 60
    rate = costs.modal_rate_per_second("A10G", 4.0, 12.0)
    assert quoted["usd"] == pytest.approx(seconds * rate) and rate > costs.price("modal_gpu_second_a10g")
    monkeypatch.delenv("MODAL_TOKEN_ID")
    assert (await quote(pool, "convert", ids, args(None)))["usd"] == 0  # auto without tokens is local
    assert (await quote(pool, "convert", ids, args("local")))["usd"] == 0


async def test_the_configured_gpu_is_priced(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [await document(pool, PDF, 20)]
    monkeypatch.setenv("CHRONOS_MODAL_GPU", "T4")
    t4 = await quote(pool, "convert", ids, args("modal"))
    monkeypatch.setenv("CHRONOS_MODAL_GPU", "A10G")
    a10g = await quote(pool, "convert", ids, args("modal"))
    assert t4["usd"] != a10g["usd"] and t4["usd"] > 0
    assert t4["gpu"] == "T4" and a10g["gpu"] == "A10G"
    t4_rate = costs.modal_rate_per_second("T4", 4.0, 12.0)
    assert t4["usd"] == pytest.approx(t4["quantity"] * t4_rate, rel=1e-3) and t4["usd"] != a10g["usd"]


async def test_the_deployments_own_history_prices_the_quote(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CHRONOS_MODAL_GPU here: the GPU, reservation and seconds per page the deployed containers
    reported (in the ledger) are used."""
    monkeypatch.delenv("CHRONOS_MODAL_GPU", raising=False)
    done = await document(pool, PDF, 10)
    await ledger_line(pool, done, 35.0, "L4")  # 3.5 s a page, cold start and idle included
    quoted: dict[str, Any] = await quote(pool, "convert", [await document(pool, PDF, 4)], args("modal"))
    assert quoted["gpu"] == "L4" and quoted["basis"] == "ledger" and quoted["quantity"] == pytest.approx(14.0)
    assert quoted["usd"] == pytest.approx(14.0 * costs.modal_rate_per_second("L4", 2.0, 8.0))


async def test_only_documents_that_go_to_modal_are_quoted(pool: asyncpg.Pool) -> None:
    slides = await document(pool, PPTX, 40)  # slides count as pages, but a PPTX converts locally
    pdf = await document(pool, PDF, 10)
    both = await quote(pool, "convert", [slides, pdf], args("modal"))
    alone = await quote(pool, "convert", [pdf], args("modal"))
    assert both["usd"] == pytest.approx(alone["usd"]) and both["pages"] == 10
    assert (await quote(pool, "convert", [slides], args("modal")))["usd"] == 0
    from app.convert import quote as convert_quote

    native = await convert_quote.convert_quote(pool, [pdf], "modal", pipeline="native", env=TOKENS)
    assert native["usd"] == 0  # the native pipeline needs no GPU


def test_quote_defaults_are_the_deployments() -> None:
    from app.convert import batcher
    from app.convert import quote as convert_quote
    from app.modal_app import CPU_CORES, MEMORY_MIB, SCALEDOWN_WINDOW_S

    assert (convert_quote.DEFAULT_CPU_CORES, convert_quote.DEFAULT_MEMORY_MIB) == (CPU_CORES, MEMORY_MIB)
    assert convert_quote.SCALEDOWN_WINDOW_S == SCALEDOWN_WINDOW_S
    assert batcher.Batcher().max_docs == convert_quote.BATCH_DOCUMENTS
