"""Docling on a Modal GPU: ``modal deploy app/modal_app.py`` deploys the app ``chronos-docling``.

The image installs the same Docling version as the service and bakes Docling's models into the image
at build time (``download_models``), so containers never download at run time and the standard PDF
pipeline (layout, tables, OCR) runs on the GPU. ``convert_batch`` converts several documents in one
call, so they share one container start. The service calls the deployed function by name
(``app.convert.backends``); tests run the same body in-process with ``convert_batch.local(...)``.

GPU: ``CHRONOS_MODAL_GPU`` at deploy time (A10G default; T4, L4). Importing this module needs no
credentials and no network.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import modal

from app.convert.options import GPUS, docling_version

APP_NAME = "chronos-docling"
GPU = os.environ.get("CHRONOS_MODAL_GPU", "A10G").upper()
if GPU not in GPUS:
    raise ValueError(f"CHRONOS_MODAL_GPU={GPU!r} is not one of {', '.join(GPUS)}")
MODELS_DIR = "/models"
_pinned = docling_version()
DOCLING_REQUIREMENT = f"docling=={_pinned}" if _pinned[0].isdigit() else "docling"


def download_models() -> None:
    """Runs once at image build time: fetch the standard pipeline's models into the image."""
    from docling.utils.model_downloader import download_models as fetch

    fetch(output_dir=Path(MODELS_DIR), progress=False)


image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("libgl1", "libglib2.0-0")
    .pip_install(DOCLING_REQUIREMENT, "psutil>=6.0", "filetype>=1.2")
    .env({"DOCLING_ARTIFACTS_PATH": MODELS_DIR})
    .run_function(download_models)
    .env({"HF_HUB_OFFLINE": "1"})
    .add_local_python_source("app")
)

app = modal.App(APP_NAME)
_engine: Any = None


@app.function(image=image, gpu=GPU, timeout=900, scaledown_window=120)
def convert_batch(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert each ``{"filename", "media_type", "data": bytes, "pipeline", "page_range"}``.

    Returns per item ``{"ok": True, "docling_json": bytes, "markdown", "page_count", "pipeline",
    "docling_version", "convert_s", "gpu_s", "gpu", "warnings", "page_range"}`` or ``{"ok": False, "failure":
    {...}}``. Set-up time (model loading) is shared out across the batch in ``gpu_s``.
    """
    from app.convert.engine import Engine
    from app.convert.errors import ConversionFailure
    from app.convert.sniff import extension_for

    global _engine
    started = time.perf_counter()
    if _engine is None:
        _engine = Engine()
        _engine.warm_up()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chronos-modal-") as tmp:
        for n, item in enumerate(items):
            path = Path(tmp) / f"{n}.{extension_for(str(item.get('media_type')))}"
            path.write_bytes(item["data"])
            page_range = item.get("page_range")
            try:
                result = _engine.convert(
                    path, str(item["media_type"]), str(item.get("pipeline") or "default"),
                    (int(page_range[0]), int(page_range[1])) if page_range else None,
                )
            except ConversionFailure as failure:
                results.append({"ok": False, "failure": failure.to_dict()})
                continue
            except Exception as exc:  # one bad document must not fail the batch
                results.append({"ok": False, "failure": {"error_class": "DoclingError",
                                                         "message": f"{type(exc).__name__}: {exc}"}})
                continue
            results.append({
                "ok": True, "docling_json": result.docling_json, "markdown": result.markdown,
                "page_count": result.page_count, "pipeline": result.pipeline,
                "docling_version": result.docling_version, "convert_s": result.convert_s,
                "warnings": result.warnings, "page_range": page_range,
            })
    elapsed = time.perf_counter() - started
    converted = sum(r["convert_s"] for r in results if r["ok"])
    overhead = max(0.0, elapsed - converted) / max(1, len(results))
    on_gpu = GPU if not modal.is_local() else None
    for r in results:
        r["gpu"] = on_gpu
        r["gpu_s"] = round((r.get("convert_s", 0.0) if r["ok"] else 0.0) + overhead, 4)
    return results
