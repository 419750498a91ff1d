"""What every embedder offers the pipeline, what it returns, and how it fails.

The errors are ``ChronosError`` kinds (app/errors.py), so the CLI and the API answer them like any other
expected failure, never as a traceback or a 500:

* ``EmbedderUnavailable`` (no such model, a size that cannot be indexed, a missing key or package): the
  request asked for something that cannot work here -- ``InvalidRequest`` (400, exit 2).
* ``EmbeddingRequestError`` / ``EmbeddingInputTooLong`` (the provider refused the request itself, or a
  text is longer than the model's window) -- ``InvalidRequest`` (400, exit 2).
* ``EmbeddingUnavailable`` (429/5xx/connection after every retry) -- ``Unavailable`` (503, exit 69).
* ``EmbeddingAuthError`` and ``EmbeddingQuotaExceeded``: the provider refuses *Chronos's* credentials or
  account, which the caller cannot fix (a 401 would tell an API client its own token is wrong):
  ``Unavailable`` answered as 502 Bad Gateway; the CLI exits 78 (EX_CONFIG) for the key, 69 for quota.
* ``EmbeddingError`` itself (the provider answered something malformed): 502, exit 69.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from app.costs import CostLine
from app.errors import InvalidRequest, Unavailable
from events.errors import ChronosError


def text_sha256(text: str) -> str:
    """The key of a text in the embedding cache and in ChunkJSON.text_sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray  # float32, shape (n, dimensions), rows in input order
    tokens: int  # tokens billed (OpenAI: response usage) or counted (local)
    cpu_s: float  # CPU seconds this process spent (local inference); 0 for remote providers
    cost: list[CostLine] = field(default_factory=list)


@dataclass(frozen=True)
class CachedEmbedResult:
    vectors: np.ndarray  # float32, shape (n, dimensions), rows in input order
    reused_count: int  # rows taken from embedding_cache instead of computed
    embedded_count: int  # distinct texts sent to the embedder
    tokens: int  # tokens of the texts sent to the embedder only
    cpu_s: float
    cost: list[CostLine] = field(default_factory=list)


@dataclass(frozen=True)
class PartialEmbedding:
    """What a failed embed call did get, and pay for, before it failed: the texts of the requests
    that succeeded, their vectors (rows in ``texts`` order), tokens and one cost line per request."""

    texts: list[str]
    vectors: np.ndarray
    tokens: int
    cost: list[CostLine]


@runtime_checkable
class Embedder(Protocol):
    model: str  # provider-qualified, as stored in vectors.model: "local:all-MiniLM-L6-v2"
    provider: str  # "local" | "openai"
    dimensions: int
    max_tokens: int  # the model's input window, counted as count_tokens counts

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def tokenizer_name(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> EmbedResult: ...


class EmbedderUnavailable(InvalidRequest, ValueError):
    """The embedder asked for cannot be built here (unknown model, missing key or package)."""

    code = "embedder_unavailable"


class EmbeddingError(ChronosError):
    """Embedding failed. ``retryable`` tells the pipeline whether a later attempt may succeed."""

    code = "embedding_failed"
    http_status = 502
    exit_code = 69
    retryable = True

    def __init__(self, message: str, *, status: int | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.partial: PartialEmbedding | None = None
        """Results of the requests that succeeded (and were billed) before this failure, if any."""


class EmbeddingAuthError(EmbeddingError, Unavailable):
    """The provider refused the credentials (HTTP 401/403): fix OPENAI_API_KEY."""

    code = "embedder_auth"
    http_status = 502
    exit_code = 78  # EX_CONFIG
    retryable = False


class EmbeddingRequestError(EmbeddingError, InvalidRequest):
    """The provider rejected the request itself (HTTP 400/404/422): retrying sends the same request."""

    code = "embedding_refused"
    http_status = 400
    exit_code = 2
    retryable = False


class EmbeddingQuotaExceeded(EmbeddingError, Unavailable):
    """The account has no quota left (HTTP 429 insufficient_quota): waiting does not help."""

    code = "embedder_quota"
    http_status = 502
    exit_code = 69
    retryable = False


class EmbeddingInputTooLong(EmbeddingError, InvalidRequest):
    """A text is longer than the model's input window: re-chunk with a smaller chunk size."""

    code = "input_too_long"
    http_status = 400
    exit_code = 2
    retryable = False


class EmbeddingUnavailable(EmbeddingError, Unavailable):
    """The provider kept failing (429/5xx/connection) after every retry: try again later."""

    code = "embedder_unavailable"
    http_status = 503
    exit_code = 69
    retryable = True
