"""Keeping what was paid for when an embedding does not complete (``EmbeddingsCached`` events).

A multi-request embed that fails for good after some requests succeeded still owes those requests:
the stage records their vectors (a blob named by an ``EmbeddingsCached`` event) and one cost line per
request. The embedding cache projection takes the vectors in, and the next attempt reads them from the
document's own stream too (``salvaged_vectors`` over ``DocumentStream.cached``), so it never waits for
the projection to catch up and never pays for the same text twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from app.catalogue import events as ev
from app.embedders.base import Embedder, PartialEmbedding, text_sha256
from events.blobs import BlobStore
from events.errors import BlobNotFound

log = logging.getLogger(__name__)


async def salvaged_vectors(
    blobs: BlobStore, cached: Sequence[ev.EmbeddingsCached], embedder: Embedder
) -> dict[str, np.ndarray]:
    """{text_sha256: vector} from the ``EmbeddingsCached`` events in ``cached`` for this model and size."""
    found: dict[str, np.ndarray] = {}
    for e in cached:
        if e.model != embedder.model or e.dimensions != embedder.dimensions or not e.text_sha256:
            continue
        try:
            raw = await blobs.get_bytes(e.vectors.sha256)
        except BlobNotFound:
            log.warning("The vectors of an EmbeddingsCached event are gone; embedding those texts again",
                        extra={"document_id": e.document_id, "model": embedder.model,
                               "vectors": e.vectors.sha256})  # fmt: skip
            continue
        matrix = np.frombuffer(raw, dtype="<f4")
        if matrix.size != e.dimensions * len(e.text_sha256):
            log.warning("The vectors blob of an EmbeddingsCached event has the wrong size; ignoring it",
                        extra={"document_id": e.document_id, "model": embedder.model,
                               "vectors": e.vectors.sha256, "floats": int(matrix.size)})  # fmt: skip
            continue
        for digest, row in zip(e.text_sha256, matrix.reshape(len(e.text_sha256), e.dimensions), strict=True):
            found.setdefault(digest, row)
    return found


def cached_event(
    *, document_id: str, chunk_set_id: str, embedder: Embedder, partial: PartialEmbedding, vectors: ev.BlobRef,
    reason: str, revision: int | None = None,
) -> ev.EmbeddingsCached:  # fmt: skip
    """The ``EmbeddingsCached`` for ``partial`` (its vectors already stored as ``vectors``)."""
    return ev.EmbeddingsCached(
        document_id=document_id,
        chunk_set_id=chunk_set_id,
        model=embedder.model,
        provider=embedder.provider,
        dimensions=embedder.dimensions,
        vectors=vectors,
        text_sha256=[text_sha256(t) for t in partial.texts],
        tokens=partial.tokens,
        reason=reason,
        revision=revision,
    )
