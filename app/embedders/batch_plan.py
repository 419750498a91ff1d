"""What a Batch API embedding sends: per document, the texts of its current chunk set (the one the
embed stage would embed: the document's latest, read from its stream and content blob) that are not
embedded with the model yet, as JSONL lines within the endpoint's limits, packed into batches within
the Batch API's limits (app.embedders.batch_api).

A text already in the embedding cache (or paid for by an earlier attempt: EmbeddingsCached in the
document's stream) is not sent; a text two documents of one batch share is sent once (by the first).
A document with nothing to send, or no chunks yet, needs no batch: the normal embed stage does it
for free (everything cached) or when its chunks arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from app.catalogue.content import load_content
from app.catalogue.ids import stream_for
from app.embedders.base import EmbeddingError, text_sha256
from app.embedders.batch_api import MAX_BATCH_INPUTS, MAX_BATCH_REQUESTS, MAX_FILE_BYTES, jsonl_line
from app.embedders.cache import cached_vectors
from app.embedders.openai import OpenAIEmbedder
from app.embedders.salvage import salvaged_vectors
from app.pipeline.stream import DocumentStream
from events.blobs import BlobStore
from events.errors import BlobNotFound
from events.store import EventStore


@dataclass
class PlannedDocument:
    document_id: str
    chunk_set_id: str
    custom_ids: list[str]
    inputs: int
    jsonl: bytes
    revision: int | None = None  # of the chunk set (its results are for that revision)


@dataclass
class PlannedBatch:
    documents: list[PlannedDocument] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)  # sha256 of every text sent

    @property
    def inputs(self) -> int:
        return sum(d.inputs for d in self.documents)

    @property
    def requests(self) -> int:
        return sum(len(d.custom_ids) for d in self.documents)

    @property
    def size(self) -> int:
        return sum(len(d.jsonl) for d in self.documents)

    def jsonl(self) -> bytes:
        return b"".join(d.jsonl for d in self.documents)


@dataclass
class Plan:
    batches: list[PlannedBatch] = field(default_factory=list)
    nothing_to_send: list[str] = field(default_factory=list)  # every text cached already
    no_chunks: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # document_id -> why it cannot be embedded


async def plan_batches(
    pool: asyncpg.Pool, store: EventStore, blobs: BlobStore, embedder: OpenAIEmbedder, document_ids: list[str]
) -> Plan:
    out = Plan()
    current = PlannedBatch()
    for doc in document_ids:
        stream = await DocumentStream.read(store, stream_for(doc))
        chunk_set = stream.current_chunk_set
        if stream.state is None or stream.state.deleted:
            out.refused[doc] = "deleted" if stream.state else "no such document"
            continue
        if chunk_set is None:
            out.no_chunks.append(doc)
            continue
        try:
            texts = [c.text for c in await load_content(blobs, chunk_set)]
        except BlobNotFound as exc:
            out.refused[doc] = f"the texts of its chunk set are missing from the blob store: {exc}"
            continue
        chunk_set_id = chunk_set.chunk_set_id
        hashes = [text_sha256(t) for t in texts]  # as the embedding cache keys them
        known = set(await cached_vectors(pool, embedder, hashes))
        known |= set(await salvaged_vectors(blobs, stream.cached, embedder))
        planned = _document(embedder, doc, chunk_set_id, texts, hashes, known | current.texts, out)
        if planned is None:
            continue
        planned.revision = stream.state.chunk_set_revision or stream.state.revision
        if current.documents and not _fits(current, planned):
            out.batches.append(current)
            current = PlannedBatch()
            planned = _document(embedder, doc, chunk_set_id, texts, hashes, known, out)
            if planned is None:
                continue
            planned.revision = stream.state.chunk_set_revision or stream.state.revision
        if not _fits(PlannedBatch(), planned):
            out.refused[doc] = (f"{planned.inputs} texts to embed, more than one batch holds "
                                f"({MAX_BATCH_INPUTS}); embed it without --batch-api")  # fmt: skip
            continue
        current.documents.append(planned)
        current.texts |= {h for h, t in zip(hashes, texts, strict=True) if h not in known}
    if current.documents:
        out.batches.append(current)
    return out


def _document(
    embedder: OpenAIEmbedder, doc: str, chunk_set_id: str, texts: list[str], hashes: list[str], skip: set[str],
    out: Plan,
) -> PlannedDocument | None:  # fmt: skip
    """The lines for ``doc``'s texts that are not in ``skip`` (one per distinct text), or None."""
    send: list[str] = []
    seen = set(skip)
    for text, digest in zip(texts, hashes, strict=True):
        if digest not in seen:
            seen.add(digest)
            send.append(text)
    if not send:
        out.nothing_to_send.append(doc)
        return None
    try:
        ranges = embedder.batches(send)
    except EmbeddingError as exc:
        out.refused[doc] = str(exc)
        return None
    custom_ids = [f"{doc}:{n}" for n in range(len(ranges))]
    jsonl = b"".join(jsonl_line(cid, embedder, send[a:b]) for cid, (a, b) in zip(custom_ids, ranges, strict=True))
    return PlannedDocument(doc, chunk_set_id, custom_ids, len(send), jsonl)


def _fits(batch: PlannedBatch, doc: PlannedDocument) -> bool:
    return (batch.inputs + doc.inputs <= MAX_BATCH_INPUTS and batch.requests + len(doc.custom_ids) <= MAX_BATCH_REQUESTS
            and batch.size + len(doc.jsonl) <= MAX_FILE_BYTES)  # fmt: skip
