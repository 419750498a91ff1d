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
    """GPU the deployed Modal function runs on (set at deploy time; used for pricing)."""
    modal_timeout_s: float = 600.0
    """Limit for one Modal call (a whole batch), including the container start."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"convert backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"convert pipeline {self.pipeline!r} is not one of {', '.join(PIPELINES)}")
        if self.gpu.upper() not in GPUS:
            raise ValueError(f"Modal GPU {self.gpu!r} is not one of {', '.join(GPUS)} (CHRONOS_MODAL_GPU)")
        if self.timeout_s <= 0 or self.memory_mb <= 0 or self.modal_timeout_s <= 0:
            raise ValueError("convert timeouts and memory cap must be positive")

    def resolved_backend(self, env: dict[str, str] | None = None) -> str:
        if self.backend == "auto":
            return "modal" if modal_configured(env) else "local"
        return self.backend

    def settings_hash(self) -> str:
        """Hash of what changes the output (pipeline, Docling version), not of where it ran."""
        settings = {"pipeline": self.pipeline, "docling": docling_version(), "format": OUTPUT_FORMAT_VERSION}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


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
