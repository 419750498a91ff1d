"""OpenAI embeddings (``text-embedding-3-small`` by default) through ``openai.AsyncOpenAI``.

* Requests are cut into batches that respect the API's per-request limits: at most 2048 inputs,
  at most 300,000 tokens summed over the inputs, every input at most 8191 tokens -- counted with
  tiktoken's ``cl100k_base``, the encoding of every OpenAI embedding model.
* Retries are the SDK's own (``max_retries``): it retries 408, 409, 429, 5xx and connection errors
  with exponential backoff and jitter (0.5 s doubling to 8 s), waiting what ``retry-after-ms`` or
  ``Retry-After`` asks for up to two minutes, and not at all when the server asks for longer. The
  one thing it would get wrong is a 429 ``insufficient_quota``: waiting never helps, so
  ``_Client._should_retry`` refuses it. What reaches us after the SDK is done is classified for the
  pipeline: 401/403 ``EmbeddingAuthError``, 400/404/422 ``EmbeddingRequestError``,
  ``insufficient_quota`` ``EmbeddingQuotaExceeded`` (none retryable), 429/5xx/connection errors
  ``EmbeddingUnavailable`` (retryable later).
* Every request that succeeds is billed, whatever happens to the next one: each becomes its own cost
  line (the response's ``usage`` tokens, app.costs.openai_tokens). When a later request fails for
  good, the error carries the earlier requests' vectors and cost lines (``EmbeddingError.partial``),
  so the stage records what was paid for and a retry sends only what is missing.
* ``OPENAI_BASE_URL`` (or Settings.openai_base_url) points the client at any compatible server.
* Tokens are counted with ``cl100k_base`` loaded offline (app.embedders.encoding).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import openai

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
    PartialEmbedding,
)
from app.embedders.encoding import ENCODING, load_encoding
from app.embedders.models import OPENAI_DEFAULT, OPENAI_NATIVE_DIMENSIONS, openai_spec

log = logging.getLogger(__name__)

DEFAULT_MODEL = OPENAI_DEFAULT
NATIVE_DIMENSIONS = OPENAI_NATIVE_DIMENSIONS
MAX_INPUT_TOKENS = 8191
MAX_BATCH_INPUTS = 2048
MAX_BATCH_TOKENS = 300_000
__all__ = ["ENCODING", "OpenAIEmbedder", "classify", "load_encoding", "quota_exhausted"]


def quota_exhausted(body: object) -> bool:
    """Whether an error body says the account has no quota (or credit) left."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    return "insufficient_quota" in (error.get("code"), error.get("type"))


class _Client(openai.AsyncOpenAI):
    """The SDK's client, except that a 429 ``insufficient_quota`` is not retried (waiting never helps)."""

    def _should_retry(self, response: Any) -> bool:
        if response.status_code == 429:
            try:
                body = json.loads(response.content or b"null")
            except (ValueError, UnicodeDecodeError):
                body = None
            if quota_exhausted(body):
                return False
        return bool(super()._should_retry(response))


def classify(exc: Exception, model: str) -> EmbeddingError:
    """The SDK's final error (after its retries) as the error class the pipeline records."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = f"HTTP {status} from the embeddings API for {model}: {exc.message}"
        if status in (401, 403):
            return EmbeddingAuthError(detail + " -- check OPENAI_API_KEY", status=status)
        if status == 429 and (exc.code == "insufficient_quota" or quota_exhausted(exc.body)):
            return EmbeddingQuotaExceeded(detail + " -- add credit to the account", status=status)
        if status in (408, 409, 429) or status >= 500:
            return EmbeddingUnavailable(detail + " (gave up after the client's retries; try again later)",
                                        status=status)  # fmt: skip
        return EmbeddingRequestError(detail, status=status)
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return EmbeddingUnavailable(f"{type(exc).__name__} reaching the embeddings API for {model}: {exc} "
                                    "(gave up after the client's retries; try again later)")  # fmt: skip
    return EmbeddingError(f"{type(exc).__name__} from the embeddings API for {model}: {exc}")


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
        timeout_s: float = 120.0,
    ) -> None:
        if not api_key:
            raise EmbedderUnavailable(f"embedding with openai:{name} needs OPENAI_API_KEY")
        spec = openai_spec(name, dimensions)
        try:
            self._unit_price = costs.price(f"openai_token_{name}")
        except KeyError as exc:
            raise EmbedderUnavailable(str(exc.args[0])) from exc
        self.name = name
        self.dimensions = spec.dimensions
        self._send_dimensions = spec.send_dimensions
        self.model = spec.stored
        self.max_tokens = MAX_INPUT_TOKENS
        self.max_batch_inputs = max(1, min(max_batch_inputs, MAX_BATCH_INPUTS))
        self.max_batch_tokens = max(1, min(max_batch_tokens, MAX_BATCH_TOKENS))
        self.max_retries = max_retries
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

    def client(self) -> openai.AsyncOpenAI:
        """A new client (an httpx client belongs to the event loop it was first used on)."""
        return _Client(api_key=self._api_key, base_url=self._base_url, max_retries=self.max_retries,
                       timeout=self.timeout_s)  # fmt: skip

    def request_body(self, batch: Sequence[str]) -> dict[str, Any]:
        """The body of one embeddings request (also a Batch API line's body)."""
        body: dict[str, Any] = {"model": self.name, "input": list(batch)}
        if self._send_dimensions:
            body["dimensions"] = self.dimensions
        return body

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
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        lines: list[costs.CostLine] = []
        billed = 0
        async with self.client() as client:
            for number, (start, end) in enumerate(ranges):
                try:
                    vectors, tokens = await self._create(client, items[start:end])
                except EmbeddingError as exc:
                    log.warning(
                        "Embedding request failed for good",
                        extra={
                            "model": self.model,
                            "request": number + 1,
                            "requests": len(ranges),
                            "error_class": type(exc).__name__,
                            "error": str(exc),
                            "paid_requests": number,
                        },
                    )
                    if number:
                        exc.partial = PartialEmbedding(items[:start], out[:start].copy(), billed, lines)
                    raise
                out[start:end] = vectors
                billed += tokens
                lines.append(self.cost_line(tokens, number + 1, end - start))
        return EmbedResult(out, billed, 0.0, lines)

    def cost_line(self, tokens: int, request: int, inputs: int) -> costs.CostLine:
        line = costs.openai_tokens(tokens, self.name)
        return costs.CostLine(line.provider, line.resource, line.quantity, line.unit_price_usd,
                              {**(line.details or {}), "request": request, "inputs": inputs})  # fmt: skip

    async def _create(self, client: openai.AsyncOpenAI, batch: list[str]) -> tuple[np.ndarray, int]:
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self._send_dimensions else {}
        try:
            response = await client.embeddings.create(model=self.name, input=batch, **extra)
        except openai.OpenAIError as exc:
            raise classify(exc, self.model) from exc
        return self.parse(response.data, getattr(response, "usage", None), batch)

    def parse(self, data: Sequence[Any], usage: Any, batch: Sequence[str]) -> tuple[np.ndarray, int]:
        """(vectors in input order, tokens billed) from a response's ``data`` and ``usage``."""
        ordered = sorted(data, key=lambda d: d.index)
        if len(ordered) != len(batch):
            raise EmbeddingError(f"the embeddings API returned {len(ordered)} vectors for {len(batch)} inputs")
        vectors = np.asarray([d.embedding for d in ordered], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimensions:
            raise EmbeddingError(
                f"the embeddings API returned vectors of shape {vectors.shape}, expected {self.dimensions} "
                f"dimensions for {self.model}",
                retryable=False,
            )
        tokens = getattr(usage, "total_tokens", None) or getattr(usage, "prompt_tokens", None)
        if tokens is None:
            tokens = sum(self.count_tokens(batch))
            log.warning(
                "The embeddings API sent no usage; billing our own token count",
                extra={"model": self.model, "tokens": tokens},
            )
        return vectors, int(tokens)
