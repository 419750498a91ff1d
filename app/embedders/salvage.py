"""Keeping what was paid for when an embedding does not complete (``EmbeddingsCached`` events).

A multi-request embed that fails for good after some requests succeeded still owes those requests:
the stage records their vectors (a blob named by an ``EmbeddingsCached`` event) and one cost line per
request. The embedding cache projection takes the vectors in, and the next attempt reads them from the
document's own stream too (``salvaged_vectors``), so it never waits for the projection to catch up and
never pays for the same text twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from app import domain
from app.embedders.base import Embedder, PartialEmbedding, text_sha256
from events.blobs import BlobStore
from events.errors import BlobNotFound
from events.types import RecordedEvent

log = logging.getLogger(__name__)


async def salvaged_vectors(
    blobs: BlobStore, events: Sequence[RecordedEvent], embedder: Embedder
) -> dict[str, np.ndarray]:
    """{text_sha256: vector} from the ``EmbeddingsCached`` events in ``events`` for this model and size."""
    found: dict[str, np.ndarray] = {}
    for e in events:
        if e.type != domain.EMBEDDINGS_CACHED or e.data.get("model") != embedder.model:
            continue
        dims = int(e.data.get("dimensions") or 0)
        hashes = [str(h) for h in e.data.get("text_sha256") or []]
        if dims != embedder.dimensions or not hashes:
            continue
        try:
            raw = await blobs.get_bytes(str(e.data["vectors"]["sha256"]))
        except BlobNotFound:
            log.warning("The vectors of an EmbeddingsCached event are gone; embedding those texts again",
                        extra={"event_id": str(e.event_id), "model": embedder.model})
            continue
        matrix = np.frombuffer(raw, dtype="<f4")
        if matrix.size != dims * len(hashes):
            continue
        for digest, row in zip(hashes, matrix.reshape(len(hashes), dims), strict=True):
            found.setdefault(digest, row)
    return found


def cached_payload(
    *, document_id: str, chunk_set_id: str, embedder: Embedder, partial: PartialEmbedding,
    vectors: domain.BlobRefJSON, reason: str,
) -> domain.EmbeddingsCachedData:  # fmt: skip
    """The ``EmbeddingsCached`` payload for ``partial`` (its vectors already stored as ``vectors``)."""
    return {
        "document_id": document_id,
        "chunk_set_id": chunk_set_id,
        "model": embedder.model,
        "provider": embedder.provider,
        "dimensions": embedder.dimensions,
        "vectors": vectors,
        "text_sha256": [text_sha256(t) for t in partial.texts],
        "tokens": partial.tokens,
        "reason": reason,
    }
