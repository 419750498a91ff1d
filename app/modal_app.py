"""Docling on a Modal GPU: the deployment of the Modal app ``chronos-docling``.

Deploy with either of (from the repository root)::

    modal deploy app/modal_app.py
    modal deploy -m app.modal_app

**Importable without the project.** ``modal deploy`` runs the image's build steps (``run_function``)
in a container that holds only this file (or, with ``-m``, only the ``app`` package's sources, without
its dependencies), and the running containers import it again. So at module level this file imports
nothing but the standard library and ``modal``; the project's code (``app.convert``, mounted as the
last image step by ``add_local_python_source``) is imported inside the container's hooks only.

**One configuration, read once, where the deploy runs.** ``CHRONOS_MODAL_*`` variables of the deploying
shell decide the GPU, the CPU/memory reservation, the cost caps and the timeouts; they are passed to
the containers explicitly (``env=CONTAINER_ENV``), so a container reports the GPU it was deployed with
(it cannot see the deploying shell's environment otherwise).

**What runs where.** ``Converter`` is a class: ``@modal.enter`` builds Docling's standard PDF pipeline
on CUDA once per container (layout and OCR batched at 64 pages, Docling's GPU guide; CUDA missing is an
error, never a silent CPU run), and ``convert(items, deadline_unix)`` converts a batch of documents
sent in one call by the service's batcher (``app.convert.batcher``). The batch loop, the per-document
Docling timeout and the attribution of the container's billed time (cold start, idle tail) to the
documents live in ``app.convert.container``.
"""

import importlib.metadata
import os
import time
from pathlib import Path
from typing import Any

import modal

APP_NAME = "chronos-docling"
CLASS_NAME = "Converter"
GPUS = ("A10G", "L4", "T4")  # the GPUs app/costs.py has prices for (app.convert.options.GPUS)
MODELS_DIR = "/models"
SMOKE_TEXT = "Chronos smoke test: Docling converts on the GPU"


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


GPU = os.environ.get("CHRONOS_MODAL_GPU", "A10G").upper()
if GPU not in GPUS:
    raise ValueError(f"CHRONOS_MODAL_GPU={GPU!r} is not one of {', '.join(GPUS)}")
CPU_CORES = _number("CHRONOS_MODAL_CPU", 4.0)
"""Physical cores reserved per container (Modal's default is 0.125, and Docling's threads follow it)."""
MEMORY_MIB = int(_number("CHRONOS_MODAL_MEMORY_MB", 12288))
"""Memory reserved per container (Modal's default is 128 MiB)."""
MAX_CONTAINERS = int(_number("CHRONOS_MODAL_MAX_CONTAINERS", 2))
"""Cost cap: at most this many GPU containers at once; further calls queue for a free one."""
SCALEDOWN_WINDOW_S = int(_number("CHRONOS_MODAL_SCALEDOWN", 60))
"""How long an idle container stays up (and is billed) waiting for the next batch."""
FUNCTION_TIMEOUT_S = int(_number("CHRONOS_MODAL_FUNCTION_TIMEOUT", 540))
"""Modal's hard limit for one call; the service's call timeout (``CHRONOS_MODAL_TIMEOUT``, 600 s) is
longer, and every call carries the client's own deadline, which the batch loop never runs past."""
DOCUMENT_TIMEOUT_S = _number("CHRONOS_MODAL_DOCUMENT_TIMEOUT", 120.0)
"""Docling's ``document_timeout`` per document; a document cut short by it is a Timeout failure."""
SNAPSHOT = os.environ.get("CHRONOS_MODAL_SNAPSHOT", "0") == "1"
"""Memory snapshots: the (CPU-only) import of torch and Docling is restored instead of repeated."""
GPU_BATCH_PAGES = 64  # layout and OCR batch size on the GPU (Docling's GPU guide; its default is 4)


def _docling_requirement() -> str:
    for dist in ("docling", "docling-slim"):
        try:
            return f"docling=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "docling"


DOCLING_REQUIREMENT = _docling_requirement()

CONTAINER_ENV: dict[str, str | None] = {
    "CHRONOS_MODAL_GPU": GPU,
    "CHRONOS_MODAL_CPU": f"{CPU_CORES:g}",
    "CHRONOS_MODAL_MEMORY_MB": str(MEMORY_MIB),
    "CHRONOS_MODAL_MAX_CONTAINERS": str(MAX_CONTAINERS),
    "CHRONOS_MODAL_SCALEDOWN": str(SCALEDOWN_WINDOW_S),
    "CHRONOS_MODAL_FUNCTION_TIMEOUT": str(FUNCTION_TIMEOUT_S),
    "CHRONOS_MODAL_DOCUMENT_TIMEOUT": f"{DOCUMENT_TIMEOUT_S:g}",
    "CHRONOS_MODAL_SNAPSHOT": "1" if SNAPSHOT else "0",
    "OMP_NUM_THREADS": str(max(1, int(CPU_CORES))),
}
"""What the containers are told about their deployment (they see nothing of the deploying shell)."""


def pipeline_options(device: str = "cuda", *, full_page_ocr: bool = False) -> Any:
    """Docling's standard PDF pipeline tuned for one GPU: CUDA (an error when absent), layout and OCR
    batched at ``GPU_BATCH_PAGES``, RapidOCR on torch (so OCR runs on the GPU too), threads from the
    CPU reservation, the per-document timeout, and the models baked into the image."""
    from docling.datamodel.accelerator_options import AcceleratorOptions
    from docling.datamodel.pipeline_options import OcrMode, RapidOcrOptions, ThreadedPdfPipelineOptions

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                f"CUDA is not available in this container (torch {torch.__version__}, built with CUDA: "
                f"{torch.backends.cuda.is_built()}); the GPU converter refuses to run Docling on the CPU. "
                "Check the `gpu=` of the deployment and that the image installs a CUDA build of torch"
            )
    ocr = RapidOcrOptions(backend="torch")
    if full_page_ocr:
        ocr = RapidOcrOptions(backend="torch", mode=OcrMode.FULL_PAGE)
    return ThreadedPdfPipelineOptions(
        accelerator_options=AcceleratorOptions(device=device, num_threads=max(1, int(CPU_CORES))),
        artifacts_path=MODELS_DIR if Path(MODELS_DIR).is_dir() else None,
        document_timeout=DOCUMENT_TIMEOUT_S,
        do_ocr=True,
        ocr_options=ocr,
        do_table_structure=True,
        layout_batch_size=GPU_BATCH_PAGES,
        ocr_batch_size=GPU_BATCH_PAGES,
        table_batch_size=4,  # Docling's GPU guide: table structure does not batch on the GPU yet
    )


def download_models() -> None:
    """Build step: only the models the standard pipeline above uses (layout, TableFormer, RapidOCR's
    torch models), into the image, so containers never download at run time."""
    from docling.utils.model_downloader import download_models as fetch

    fetch(
        output_dir=Path(MODELS_DIR),
        progress=False,
        with_layout=True,
        with_tableformer=True,
        with_rapidocr=True,
        rapidocr_models=["torch:ch"],
        with_code_formula=False,
        with_picture_classifier=False,
        with_easyocr=False,
    )


def smoke_pdf(text: str = SMOKE_TEXT) -> bytes:
    """A one-page PDF with ``text`` in Helvetica: what the build-time smoke conversion converts."""
    content = f"BT /F1 20 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def smoke_convert() -> None:
    """Build step on the deployment's GPU: convert ``smoke_pdf()`` with the pipeline the containers use
    (full-page OCR, so layout and OCR both run on CUDA); a broken image never gets deployed."""
    import io

    from docling.datamodel.base_models import ConversionStatus, DocumentStream, InputFormat
    from docling.document_converter import DocumentConverter, PdfFormatOption

    started = time.perf_counter()
    converter = DocumentConverter(
        allowed_formats=[InputFormat.PDF],
        format_options={InputFormat.PDF: PdfFormatOption(pipeline_options=pipeline_options(full_page_ocr=True))},
    )
    result = converter.convert(DocumentStream(name="smoke.pdf", stream=io.BytesIO(smoke_pdf())), raises_on_error=False)
    markdown = result.document.export_to_markdown() if result.document is not None else ""
    if result.status != ConversionStatus.SUCCESS or "smoke test" not in markdown:
        raise RuntimeError(
            f"smoke conversion failed: status {result.status}, errors "
            f"{[e.error_message for e in result.errors]}, markdown {markdown[:200]!r}"
        )
    print(f"smoke conversion ok in {time.perf_counter() - started:.1f} s: {markdown.strip()[:80]!r}")


image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("libgl1", "libglib2.0-0")
    .pip_install(DOCLING_REQUIREMENT, "psutil>=6.0", "filetype>=1.2")
    .env({"DOCLING_ARTIFACTS_PATH": MODELS_DIR})
    .run_function(download_models)
    .env({"HF_HUB_OFFLINE": "1"})
    .run_function(smoke_convert, gpu=GPU)
    .add_local_python_source("app")  # last: the service's own code, mounted when a container starts
)

app = modal.App(APP_NAME, tags={"service": "chronos-ingest"})


@app.cls(
    image=image,
    gpu=GPU,
    cpu=CPU_CORES,
    memory=MEMORY_MIB,
    timeout=FUNCTION_TIMEOUT_S,
    scaledown_window=SCALEDOWN_WINDOW_S,
    max_containers=MAX_CONTAINERS,
    enable_memory_snapshot=SNAPSHOT,
    env=CONTAINER_ENV,
)
class Converter:
    """One GPU container: models loaded once (``load``), batches converted by ``convert``."""

    # "cpu" only to run the body with ``.local()`` here. (No ``from __future__ import annotations`` in
    # this module: Modal reads this annotation at run time to encode the parameter.)
    device: str = modal.parameter(default="cuda")

    @modal.enter(snap=SNAPSHOT)
    def import_libraries(self) -> None:
        """Import torch and Docling (seconds); captured by the memory snapshot when enabled."""
        import docling.document_converter  # noqa: F401
        import torch  # noqa: F401

    @modal.enter()
    def load(self) -> None:
        """Build the converters on the device; the standard pipeline's models load now, not in the
        first document's call."""
        from app.convert.container import start_container

        self._container = start_container(self.device, pipeline_options(self.device))

    @modal.method()
    def convert(self, items: list[dict[str, Any]], deadline_unix: float | None = None) -> dict[str, Any]:
        """Convert ``[{"filename", "media_type", "data": bytes, "pipeline", "page_range"}]``; see
        ``app.convert.container.run_batch`` for the reply."""
        from app.convert.container import run_batch

        return run_batch(self._container, items, deadline_unix)
