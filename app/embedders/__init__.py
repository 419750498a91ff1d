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
    PartialEmbedding,
    text_sha256,
)
from app.embedders.cache import embed_with_cache
from app.embedders.models import LOCAL_MODEL, OPENAI_DEFAULT, ModelSpec, parse_model, resolve_model

__all__ = [
    "LOCAL_MODEL",
    "OPENAI_DEFAULT",
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
    "ModelSpec",
    "PartialEmbedding",
    "embed_with_cache",
    "get_embedder",
    "parse_model",
    "resolve_model",
    "text_sha256",
]

_instances: dict[tuple[str, str, int, str | None, str | None], Embedder] = {}
_lock = threading.Lock()


def get_embedder(model: str | None = None, settings: Settings | None = None) -> Embedder:
    """A ready embedder for ``model`` (see the module docstring); instances are reused per process."""
    settings = settings or Settings.from_env()
    spec = resolve_model(model, settings)
    provider, name, dimensions = spec.provider, spec.name, spec.dimensions
    key = (
        provider,
        name,
        dimensions,
        settings.openai_api_key if provider == "openai" else None,
        settings.openai_base_url if provider == "openai" else None,
    )
    with _lock:
        embedder = _instances.get(key)
        if embedder is None:
            embedder = _build(spec, settings)
            _instances[key] = embedder
        return embedder


def _build(spec: ModelSpec, settings: Settings) -> Embedder:
    if spec.provider == "local":
        from app.embedders.local import LocalEmbedder

        return LocalEmbedder()
    from app.embedders.openai import OpenAIEmbedder

    return OpenAIEmbedder(
        spec.name,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        dimensions=spec.dimensions if spec.send_dimensions else None,
    )
