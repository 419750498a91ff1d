"""What converting documents again will cost: the convert part of the reprocess quote.

Quoted whenever the backend resolves to Modal (``modal``, or ``auto`` with MODAL_TOKEN_ID/SECRET
set), for the documents that would go there (PDFs, unless the native pipeline is asked for), at the
GPU the deployment has: ``CHRONOS_MODAL_GPU`` when set (the deploy-time setting), else the GPU the
deployed containers last reported in the ledger, else A10G. Seconds per page come from this
deployment's own ledger lines (their container time includes cold starts and idle windows) or, with
no history yet, from the expected speeds in docs/convert.md plus one cold start and idle window per
batch; each second costs the GPU, the CPU and the memory reservation.
"""

from __future__ import annotations

import math
from typing import Any

import asyncpg

from app import config, costs
from app.convert.options import GPUS, ConvertOptions, runs_on_modal

EXPECTED_PAGES_PER_S = {"A10G": 2.0, "L4": 1.3, "T4": 1.0}
"""Standard pipeline, estimated from Docling's published figures (docs/convert.md); unverified here."""
DEFAULT_CPU_CORES = 4.0  # app/modal_app.py CPU_CORES
DEFAULT_MEMORY_MIB = 12288  # app/modal_app.py MEMORY_MIB
EXPECTED_COLD_START_S = 40.0  # image start, torch + Docling import, model load (no snapshot)
SCALEDOWN_WINDOW_S = 60.0  # app/modal_app.py SCALEDOWN_WINDOW_S
BATCH_DOCUMENTS = 8  # the default of Settings.modal.batch (app/convert/batcher.py)

_LATEST = """
SELECT details FROM cost_ledger WHERE provider = 'modal' AND resource = 'gpu_seconds' AND details ? 'gpu'
ORDER BY position DESC LIMIT 1
"""
_SECONDS_PER_PAGE = """
SELECT sum(l.quantity) / nullif(sum(d.page_count), 0) FROM cost_ledger l JOIN documents d USING (document_id)
WHERE l.provider = 'modal' AND l.resource = 'gpu_seconds' AND l.details ->> 'gpu' = $1 AND d.page_count > 0
"""
_PAGES = """
SELECT count(*) AS documents, coalesce(sum(page_count), 0) AS pages, array_agg(DISTINCT media_type) AS types
FROM documents WHERE document_id = ANY($1::uuid[]) AND media_type = ANY($2::text[])
"""


async def deployment(pool: asyncpg.Pool, env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """(GPU, reserved cores, reserved GiB) of the Modal deployment, as well as the service knows it:
    Settings.modal (``env``: the settings of that environment instead), else what its containers reported."""
    modal = (config.current() if env is None else config.Settings.from_env(env)).modal
    row = await pool.fetchrow(_LATEST)
    seen: dict[str, Any] = {}
    if row is not None and row["details"]:
        import orjson

        seen = row["details"] if isinstance(row["details"], dict) else orjson.loads(row["details"])
    gpu = (modal.gpu or str(seen.get("gpu") or "A10G")).upper()
    if gpu not in GPUS:
        raise ValueError(f"Modal GPU {gpu!r} is not one of {', '.join(GPUS)} (CHRONOS_MODAL_GPU)")
    cores = float(seen.get("cpu_cores") or modal.cpu or DEFAULT_CPU_CORES)
    gib = float(seen.get("memory_gib") or float(modal.memory_mb or DEFAULT_MEMORY_MIB) / 1024)
    return gpu, cores, gib


async def convert_quote(
    pool: asyncpg.Pool,
    ids: list[str],
    backend: str | None,
    pipeline: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"resource": "gpu_seconds", "quantity": seconds, "usd", "gpu", "documents", "pages", "basis"}``
    (``{"resource": None, "quantity": 0, "usd": 0.0}`` when nothing would run on Modal)."""
    options = ConvertOptions(backend=backend or "auto", pipeline=pipeline or "default")
    free: dict[str, Any] = {"resource": None, "quantity": 0, "usd": 0.0}
    if options.resolved_backend(env) != "modal":
        return free
    bound = [t for t in ("application/pdf",) if runs_on_modal(t, options.pipeline)]
    if not bound or not ids:
        return free
    row = await pool.fetchrow(_PAGES, ids, bound)
    documents, pages = int(row["documents"]) if row else 0, int(row["pages"]) if row else 0
    if not documents:
        return free
    gpu, cores, gib = await deployment(pool, env)
    per_page = await pool.fetchval(_SECONDS_PER_PAGE, gpu)
    if per_page is not None:
        seconds, basis = float(per_page) * pages, "ledger"
    else:
        batches = math.ceil(documents / BATCH_DOCUMENTS)
        seconds = pages / EXPECTED_PAGES_PER_S[gpu] + batches * (EXPECTED_COLD_START_S + SCALEDOWN_WINDOW_S)
        basis = "estimate"
    return {
        "resource": "gpu_seconds",
        "quantity": round(seconds, 1),
        "usd": seconds * costs.modal_rate_per_second(gpu, cores, gib),
        "gpu": gpu,
        "documents": documents,
        "pages": pages,
        "basis": basis,
    }
