"""Embedders: turn chunk texts into vectors, locally (sentence-transformers) or with OpenAI.

``get_embedder(model, settings)`` resolves a model name to a cached instance; ``embed_with_cache``
embeds only the texts the embedding cache does not already hold for that model and size.

Model names: ``local:all-MiniLM-L6-v2`` (or ``all-MiniLM-L6-v2``), ``openai:text-embedding-3-small``
(or ``text-embedding-3-small``), ``text-embedding-3-large``, and ``...@512`` to ask OpenAI for fewer
dimensions. No name: OpenAI text-embedding-3-small when OPENAI_API_KEY is set, else the local model.
"""

from __future__ import annotations

import threading

from app.config import Settings
from app.embedders.base import (
    CachedEmbedResult,
    Embedder,
    EmbedderUnavailable,
    EmbeddingAuthError,
    EmbeddingError,
    EmbeddingInputTooLong,
    EmbeddingQuotaExceeded,
    EmbeddingRequestError,
    EmbeddingUnavailable,
    EmbedResult,
    text_sha256,
)
from app.embedders.cache import embed_with_cache

__all__ = [
    "CachedEmbedResult",
    "EmbedResult",
    "Embedder",
    "EmbedderUnavailable",
    "EmbeddingAuthError",
    "EmbeddingError",
    "EmbeddingInputTooLong",
    "EmbeddingQuotaExceeded",
    "EmbeddingRequestError",
    "EmbeddingUnavailable",
    "embed_with_cache",
    "get_embedder",
    "parse_model",
    "text_sha256",
]

LOCAL_MODEL = "all-MiniLM-L6-v2"
OPENAI_DEFAULT = "text-embedding-3-small"
_LOCAL_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}

_instances: dict[tuple[str, str, int | None, str | None, str | None], Embedder] = {}
_lock = threading.Lock()


def parse_model(model: str | None, settings: Settings) -> tuple[str, str, int | None]:
    """(provider, model name, dimensions or None) for a model name as users write it."""
    spec = (model or "").strip()
    if not spec:
        return ("openai", OPENAI_DEFAULT, None) if settings.openai_api_key else ("local", LOCAL_MODEL, None)
    if spec.lower() in ("local", "openai"):  # a provider alone: its default model
        return ("local", LOCAL_MODEL, None) if spec.lower() == "local" else ("openai", OPENAI_DEFAULT, None)
    dimensions: int | None = None
    if "@" in spec:
        spec, _, raw = spec.rpartition("@")
        if not raw.isdigit() or int(raw) <= 0:
            raise EmbedderUnavailable(f"{model!r}: the part after '@' must be a number of dimensions")
        dimensions = int(raw)
    provider, sep, name = spec.partition(":")
    if not sep:
        provider, name = "", spec
    provider = provider.lower()
    if provider in ("", "local") and name.lower() in _LOCAL_ALIASES:
        if dimensions not in (None, 384):
            raise EmbedderUnavailable(f"{model!r}: all-MiniLM-L6-v2 always has 384 dimensions")
        return "local", LOCAL_MODEL, None
    if provider == "local":
        raise EmbedderUnavailable(f"{model!r}: the only local model is local:{LOCAL_MODEL} (bundled, offline)")
    if provider == "openai" or (provider == "" and name.startswith("text-embedding-")):
        return "openai", name, dimensions
    raise EmbedderUnavailable(
        f"unknown embedding model {model!r}; use local:{LOCAL_MODEL} or openai:<model>[@dimensions]"
    )


def get_embedder(model: str | None = None, settings: Settings | None = None) -> Embedder:
    """A ready embedder for ``model`` (see the module docstring); instances are reused per process."""
    settings = settings or Settings.from_env()
    provider, name, dimensions = parse_model(model, settings)
    key = (provider, name, dimensions,
           settings.openai_api_key if provider == "openai" else None,
           settings.openai_base_url if provider == "openai" else None)
    with _lock:
        embedder = _instances.get(key)
        if embedder is None:
            embedder = _build(provider, name, dimensions, settings)
            _instances[key] = embedder
        return embedder


def _build(provider: str, name: str, dimensions: int | None, settings: Settings) -> Embedder:
    if provider == "local":
        from app.embedders.local import LocalEmbedder

        return LocalEmbedder()
    from app.embedders.openai import OpenAIEmbedder

    return OpenAIEmbedder(name, api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                          dimensions=dimensions)
