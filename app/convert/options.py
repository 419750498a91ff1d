"""What a conversion is asked to do (``ConvertOptions``) and what it produced (``ConversionOutput``)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

BACKENDS = ("auto", "modal", "local")
PIPELINES = ("default", "native", "standard")
GPUS = ("A10G", "L4", "T4")
OUTPUT_FORMAT_VERSION = 2  # bump when what we store for a conversion changes shape


@lru_cache(maxsize=1)
def docling_version() -> str:
    """Installed Docling version (docling or docling-slim distribution), without importing Docling."""
    for dist in ("docling", "docling-slim"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not-installed"


def modal_configured(env: dict[str, str] | None = None) -> bool:
    e = os.environ if env is None else env
    return bool(e.get("MODAL_TOKEN_ID") and e.get("MODAL_TOKEN_SECRET"))


@dataclass(frozen=True)
class ConvertOptions:
    backend: str = "auto"
    """"auto" (Modal when MODAL_TOKEN_ID/SECRET are configured, else local) | "modal" | "local"."""
    pipeline: str = "default"
    """PDFs: "default" (standard when its models are present, else native) | "native" | "standard"."""
    timeout_s: float = 300.0
    """Per-document limit for a local conversion; the child process is killed when it is exceeded."""
    memory_mb: int = 3072
    """Resident memory cap of the local converter process."""
    gpu: str = field(default_factory=lambda: os.environ.get("CHRONOS_MODAL_GPU", "A10G"))
    """GPU the deployment is expected to have (``CHRONOS_MODAL_GPU``, as at deploy time). Cost lines use
    the GPU the deployed containers report; this prices only a call cancelled before any reply."""
    modal_timeout_s: float = 600.0
    """Limit for one Modal call (a whole batch), including the container start; the call is cancelled
    when it passes (the deployed function's own timeout, 540 s, is shorter)."""
    budget_s: float | None = None
    """Converter time one document may use across every attempt of the recovery ladder (whole
    document, other backend, page slices); each attempt's limit is cut to what is left. None: twice
    ``timeout_s`` (``CHRONOS_CONVERT_BUDGET``)."""
    any_type_on_modal: bool = False
    """Send documents that need no GPU to Modal too: only the recovery ladder's try on the other
    backend does, for a file that timed out or ran out of memory locally and has no pages to slice."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"convert backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"convert pipeline {self.pipeline!r} is not one of {', '.join(PIPELINES)}")
        if self.gpu.upper() not in GPUS:
            raise ValueError(f"Modal GPU {self.gpu!r} is not one of {', '.join(GPUS)} (CHRONOS_MODAL_GPU)")
        budget = self.budget_s if self.budget_s is not None else 1.0
        if min(self.timeout_s, self.memory_mb, self.modal_timeout_s, budget) <= 0:
            raise ValueError("convert timeouts, budget and memory cap must be positive")

    def total_budget_s(self) -> float:
        return self.budget_s if self.budget_s is not None else 2 * self.timeout_s

    def resolved_backend(self, env: dict[str, str] | None = None) -> str:
        if self.backend == "auto":
            return "modal" if modal_configured(env) else "local"
        return self.backend

    def settings_hash(self) -> str:
        """Hash of what changes the output (pipeline, Docling version), not of where it ran."""
        settings = {"pipeline": self.pipeline, "docling": docling_version(), "format": OUTPUT_FORMAT_VERSION}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/bmp", "image/webp"})
"""Images need the standard pipeline (OCR) too; Chronos does not accept them yet (``sniff``)."""


def runs_on_modal(media_type: str, pipeline: str) -> bool:
    """Whether a document goes to the Modal GPU when the backend is Modal: only what needs Docling's
    standard pipeline (layout, tables, OCR: PDFs unless the native pipeline is asked for, images).
    Office, web, Markdown and CSV files, and native-pipeline PDFs, use no GPU: they convert locally."""
    if media_type in IMAGE_MEDIA_TYPES:
        return True
    return media_type == "application/pdf" and pipeline != "native"


@dataclass
class ModalUsage:
    """Modal container time attributed to one document (what the ledger prices; see app/costs.py).

    ``container_s`` is the document's share of everything its call held the container for: its own
    conversion, an equal share of the batch's overhead, of the cold start when its batch started the
    container, and of the idle time (``app.convert.container`` explains the attribution)."""

    gpu: str
    container_s: float
    cpu_cores: float
    memory_gib: float
    busy_s: float = 0.0  # this document's share of the batch's own run time
    cold_start_s: float = 0.0  # share of the container's start (boot, imports, model loading)
    idle_s: float = 0.0  # share of the time the container was held idle (scaledown window)
    container_id: str | None = None
    started_container: bool = False  # this document's batch was the first on a new container
    batch_documents: int = 1
    cancelled: bool = False  # the call was cancelled after the client's timeout (an upper bound)
    device: str | None = None


@dataclass
class ConversionOutput:
    docling_json: bytes  # DoclingDocument JSON
    markdown: str
    page_count: int  # pages for PDFs; slides/sheets for PPTX/XLSX; 0 for unpaginated formats
    backend: str  # "local" | "modal"
    pipeline: str  # "native" | "standard" | "simple" (Docling's office/web/markdown backends)
    docling_version: str
    convert_s: float  # time Docling spent converting
    total_s: float  # wall time of the whole call, including queueing and process start
    cpu_s: float  # CPU seconds of the local converter process for this document
    gpu_s: float  # GPU seconds attributed to this document on Modal
    gpu: str | None
    fallback: dict[str, str] | None = None  # {"from_backend", "reason", "message"}
    slices: list[list[int]] | None = None  # 1-based inclusive page ranges when converted in slices
    media_type: str | None = None  # the sniffed type that was converted
    warnings: list[str] = field(default_factory=list)
    modal_usage: list[ModalUsage] = field(default_factory=list)  # Modal time billed for this document
    held_s: float = 0.0  # time a local converter process was held for it (the ladder's budget counts it)
