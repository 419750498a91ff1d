"""Bulk re-embedding through OpenAI's Batch API (half price), recorded in the log so it survives restarts.

``submit_embedding_batches``: plan (app.embedders.batch_plan), upload, create the batch, then append
``EmbeddingBatchSubmitted`` to the batch's own stream ``embedding-batch-<id>`` (naming the input file
kept in the blob store) and, per document, an ``EmbeddingRequested`` marked with the ``batch_id``: the
document's model is now the new one (sticky, and a model switch when ``scope`` is ``all``), and the
embed stage leaves that request to the batch.

``poll_embedding_batches``: every submitted batch without an ``EmbeddingBatchFinished`` is looked up;
one that has ended is recorded like the embed stage records its results: per document a
``ChunksEmbedded`` (its vectors from the output file, the rest from the embedding cache) and a
``CostIncurred`` per request line at the Batch API price; a document whose lines did not all
succeed (expired, cancelled, a failed line) keeps what was paid for (``EmbeddingsCached`` + costs) and
gets a final ``EmbeddingFailed`` (``BatchIncomplete``, retryable) saying how to finish it: nothing will
try again by itself, so the document is ``failed`` (and in ``reprocess --failed``) while search goes on
answering from the vectors it had. Then ``EmbeddingBatchFinished``. While the batch runs, its
documents are ``embedding`` (their EmbeddingRequested; app/catalogue/state.py).
Every event id is derived from the batch and the document, and a document that holds this batch's
result already is skipped, so a poller killed half-way and started again records nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np

from app import costs
from app.catalogue import events as ev
from app.catalogue.codec import decode_payload, new_event
from app.catalogue.content import load_content
from app.catalogue.ids import batch_event_id, batch_stream, stream_for
from app.config import Settings
from app.embedders.base import EmbedderUnavailable, text_sha256
from app.embedders.batch_api import FINISHED, BatchApi, BatchResults, LineResult, batch_errors, input_texts
from app.embedders.batch_plan import Plan, plan_batches
from app.embedders.cache import cached_vectors
from app.embedders.openai import OpenAIEmbedder
from app.embedders.salvage import salvaged_vectors
from app.pipeline.stream import DocumentStream
from app.runtime import Runtime
from events.blobs import BlobStore
from events.sqlfiles import query
from events.store import EventStore
from events.types import NewEvent

log = logging.getLogger(__name__)
JSONL = "application/jsonl"
FLOAT32 = "application/x-float32"


def batch_embedder(settings: Settings, model: str) -> OpenAIEmbedder:
    from app.embedders import get_embedder

    embedder = get_embedder(model, settings)
    if not isinstance(embedder, OpenAIEmbedder):
        raise EmbedderUnavailable(f"--batch-api is OpenAI's Batch API; {embedder.model} runs locally")
    return embedder


@dataclass
class Submitted:
    batches: list[ev.EmbeddingBatchSubmitted] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)


async def submit_embedding_batches(
    pool: asyncpg.Pool, store: EventStore, blobs: BlobStore, settings: Settings, document_ids: Sequence[str],
    model: str, *, scope: str | None, reason: str, actor: str,
) -> Submitted:  # fmt: skip
    embedder = batch_embedder(settings, model)
    plan = await plan_batches(pool, store, blobs, embedder, list(document_ids))
    report = Submitted(plan=plan)
    api = BatchApi(embedder)
    for batch in plan.batches:
        batch_id = str(uuid.uuid4())
        jsonl = batch.jsonl()
        ref = await blobs.put_bytes(jsonl, JSONL)
        openai_id, file_id = await api.submit(jsonl, batch_id)
        submitted = ev.EmbeddingBatchSubmitted(
            batch_id=batch_id, openai_batch_id=openai_id, input_file_id=file_id, input=ev.BlobRef.of(ref),
            model=embedder.model, dimensions=embedder.dimensions,
            documents=[ev.EmbeddingBatchDocument(document_id=d.document_id, chunk_set_id=d.chunk_set_id,
                                                 request_id=str(batch_event_id(batch_id, d.document_id, "request")),
                                                 custom_ids=d.custom_ids, revision=d.revision)
                       for d in batch.documents],
            requests=batch.requests, inputs=batch.inputs, estimated_tokens=_estimate(embedder, jsonl), scope=scope,
        )  # fmt: skip
        meta = {"actor": actor, "batch_id": batch_id}
        try:
            recorded = new_event(submitted, meta, batch_event_id(batch_id, "submitted"))
            await store.append(batch_stream(batch_id), [recorded])
        except Exception:
            log.error("Could not record a submitted batch; cancelling it", extra={"openai_batch_id": openai_id})
            await api.cancel(openai_id)
            raise
        for doc in submitted.documents:
            await _request(store, submitted, doc, reason, meta)
        report.batches.append(submitted)
    for plain in plan.nothing_to_send + plan.no_chunks:  # the embed stage does these (free, or when chunked)
        request = ev.EmbeddingRequested(document_id=plain, request_id=str(uuid.uuid4()), model=embedder.model,
                                        reason=reason, scope=scope)  # fmt: skip
        await store.append(stream_for(plain), [new_event(request, {"actor": actor})])
    return report


def _estimate(embedder: OpenAIEmbedder, jsonl: bytes) -> int:
    return sum(sum(embedder.count_tokens(texts)) for texts in input_texts(jsonl).values())


async def _request(
    store: EventStore, batch: ev.EmbeddingBatchSubmitted, doc: ev.EmbeddingBatchDocument, reason: str,
    meta: dict[str, Any],
) -> None:  # fmt: skip
    """The document's EmbeddingRequested for this batch (same id every time: appending it again is a no-op)."""
    request = ev.EmbeddingRequested(document_id=doc.document_id, request_id=doc.request_id, model=batch.model,
                                    reason=reason, scope=batch.scope, batch_id=batch.batch_id,
                                    revision=doc.revision)  # fmt: skip
    await store.append(stream_for(doc.document_id), [new_event(request, meta, uuid.UUID(doc.request_id))])


@dataclass
class BatchState:
    batch_id: str
    openai_batch_id: str
    status: str
    finished: ev.EmbeddingBatchFinished | None = None


async def poll_embedding_batches(rt: Runtime, actor: str = "batches") -> list[BatchState]:
    """Look up every open batch once; record the ones that have ended. Returns each batch's state."""
    states: list[BatchState] = []
    for row in await rt.pool.fetch(query("embeddings", "open_embedding_batches")):
        batch = decode_payload(ev.EmbeddingBatchSubmitted.TYPE, row["schema_version"], row["data"])
        assert isinstance(batch, ev.EmbeddingBatchSubmitted)
        embedder = batch_embedder(rt.settings, batch.model)
        remote = await BatchApi(embedder).status(batch.openai_batch_id)
        state = BatchState(batch.batch_id, batch.openai_batch_id, str(remote.status))
        log.info(
            "Embedding batch %s is %s",
            batch.batch_id,
            remote.status,
            extra={
                "action": "batch_poll",
                "batch_id": batch.batch_id,
                "openai_batch_id": batch.openai_batch_id,
                "status": remote.status,
                "request_counts": str(getattr(remote, "request_counts", None)),
            },
        )
        if remote.status in FINISHED:
            state.finished = await _finish(rt, embedder, batch, row["event_id"], remote, actor)
        states.append(state)
    return states


async def _finish(
    rt: Runtime, embedder: OpenAIEmbedder, batch: ev.EmbeddingBatchSubmitted, submitted_id: uuid.UUID, remote: Any,
    actor: str,
) -> ev.EmbeddingBatchFinished:  # fmt: skip
    api = BatchApi(embedder)
    output = await api.download(getattr(remote, "output_file_id", None))
    errors = await api.download(getattr(remote, "error_file_id", None))
    results = BatchResults()
    for raw in (output, errors):
        if raw:
            results.add_output(raw, embedder.dimensions)
    inputs = input_texts(await rt.blobs.get_bytes(batch.input.sha256))
    vectors: dict[str, np.ndarray] = {}
    for custom_id, texts in inputs.items():
        line = results.lines.get(custom_id)
        if line is not None and line.vectors is not None and len(line.vectors) == len(texts):
            vectors.update({text_sha256(t): v for t, v in zip(texts, line.vectors, strict=True)})
    why = batch_errors(remote) if remote.status != "completed" else None
    meta = {"actor": actor, "batch_id": batch.batch_id, "causation_id": str(submitted_id)}
    summary = Summary()
    for doc in batch.documents:
        ended = Ended(batch, doc, str(remote.status), why, meta)
        await _record_document(rt, embedder, ended, inputs, results, vectors, summary)
    finished = ev.EmbeddingBatchFinished(
        batch_id=batch.batch_id, openai_batch_id=batch.openai_batch_id, status=str(remote.status),
        output=ev.BlobRef.of(await rt.blobs.put_bytes(output, JSONL)) if output else None,
        errors=ev.BlobRef.of(await rt.blobs.put_bytes(errors, JSONL)) if errors else None,
        embedded_documents=summary.embedded, incomplete_documents=summary.incomplete,
        tokens=summary.tokens, amount_usd=round(summary.usd, 10),
    )  # fmt: skip
    await rt.store.append(batch_stream(batch.batch_id),
                          [new_event(finished, meta, batch_event_id(batch.batch_id, "finished"))])  # fmt: skip
    log.info(
        "Recorded embedding batch %s (%s)",
        batch.batch_id,
        remote.status,
        extra={
            "action": "batch_finish",
            "batch_id": batch.batch_id,
            "embedded": len(summary.embedded),
            "incomplete": len(summary.incomplete),
            "tokens": summary.tokens,
        },
    )
    return finished


@dataclass
class Summary:
    embedded: list[str] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    usd: float = 0.0


@dataclass(frozen=True)
class Ended:
    """One document of a batch that has ended."""

    batch: ev.EmbeddingBatchSubmitted
    doc: ev.EmbeddingBatchDocument
    status: str  # the batch's
    why: str | None  # the batch's own errors, when it did not complete
    meta: dict[str, Any]

    def event_id(self, kind: str) -> uuid.UUID:
        return batch_event_id(self.batch.batch_id, self.doc.document_id, kind)


async def _record_document(
    rt: Runtime, embedder: OpenAIEmbedder, ended: Ended, inputs: dict[str, list[str]], results: BatchResults,
    vectors: dict[str, np.ndarray], summary: Summary,
) -> None:  # fmt: skip
    doc, document_id = ended.doc, ended.doc.document_id
    stream = await DocumentStream.read(rt.store, stream_for(document_id))
    lines = [(cid, results.lines.get(cid) or LineResult(error=ended.why or "no result for this request"))
             for cid in doc.custom_ids]  # fmt: skip
    paid = [(cid, line) for cid, line in lines if line.vectors is not None]
    cost_lines = [_cost(embedder, line, cid, ended.batch) for cid, line in paid]
    summary.tokens += sum(line.tokens for _, line in paid)
    summary.usd += sum(c.amount_usd for c in cost_lines)
    chunk_set = stream.chunk_sets.get(doc.chunk_set_id)
    deleted = stream.state is None or stream.state.deleted
    if deleted or chunk_set is None:
        summary.incomplete[document_id] = "deleted meanwhile" if deleted else "its chunk set is gone"
        return
    recorded = [await _exists(rt, ended.event_id(kind)) for kind in ("embedded", "cached", "failed")]
    if any(recorded):  # by an earlier run of the poller
        if recorded[0]:
            summary.embedded.append(document_id)
        else:
            summary.incomplete[document_id] = "recorded by an earlier run"
        return
    await _request(rt.store, ended.batch, doc, "batch", ended.meta)  # in case the submitter stopped before it
    texts = [c.text for c in await load_content(rt.blobs, chunk_set)]
    hashes = [text_sha256(t) for t in texts]
    known = dict(vectors)
    known.update(await salvaged_vectors(rt.blobs, stream.cached, embedder))
    known.update(await cached_vectors(rt.pool, embedder, [h for h in hashes if h not in known]))
    failed = [f"{cid}: {line.error}" for cid, line in lines if line.vectors is None]
    if all(h in known for h in hashes) and not failed:
        await _embedded(rt, embedder, ended, chunk_set, known, hashes, inputs, paid, cost_lines)
        summary.embedded.append(document_id)
        return
    await _incomplete(rt, embedder, ended, inputs, paid, cost_lines, failed)
    summary.incomplete[document_id] = "; ".join(failed) or "some texts have no vector"


async def _exists(rt: Runtime, event_id: uuid.UUID) -> bool:
    return await rt.pool.fetchval(query("jobs", "event_exists"), event_id) is not None


async def _embedded(
    rt: Runtime, embedder: OpenAIEmbedder, ended: Ended, chunk_set: ev.DocumentChunked, known: dict[str, np.ndarray],
    hashes: list[str], inputs: dict[str, list[str]], paid: list[tuple[str, LineResult]],
    cost_lines: list[costs.CostLine],
) -> None:  # fmt: skip
    """The document's ChunksEmbedded (every text has a vector) and the cost of its lines."""
    matrix = np.ascontiguousarray(np.stack([known[h] for h in hashes]) if hashes else
                                  np.zeros((0, embedder.dimensions)), dtype=np.float32)  # fmt: skip
    ref = await rt.blobs.put_bytes(matrix.tobytes(), FLOAT32)
    result_id = ended.event_id("embedded")
    sent = sum(len(inputs.get(cid, [])) for cid, _ in paid)
    embedded = ev.ChunksEmbedded(
        document_id=ended.doc.document_id, chunk_set_id=chunk_set.chunk_set_id, model=embedder.model,
        provider=embedder.provider, dimensions=embedder.dimensions, vectors=ev.BlobRef.of(ref),
        chunk_count=len(hashes), reused_count=max(0, len(hashes) - sent), tokens=sum(line.tokens for _, line in paid),
        revision=ended.doc.revision,
    )  # fmt: skip
    events = [new_event(embedded, ended.meta, result_id), *_cost_events(ended, result_id, cost_lines)]
    await rt.store.append(stream_for(ended.doc.document_id), events)


async def _incomplete(
    rt: Runtime, embedder: OpenAIEmbedder, ended: Ended, inputs: dict[str, list[str]],
    paid: list[tuple[str, LineResult]], cost_lines: list[costs.CostLine], failed: list[str],
) -> None:  # fmt: skip
    """What the batch did for the document (EmbeddingsCached + costs) and a final EmbeddingFailed saying
    how to finish it."""
    document_id = ended.doc.document_id
    events: list[NewEvent] = []
    if paid:
        texts_paid = [t for cid, _ in paid for t in inputs.get(cid, [])]
        matrix = np.ascontiguousarray(np.concatenate([line.vectors for _, line in paid if line.vectors is not None]),
                                      dtype=np.float32)  # fmt: skip
        ref = await rt.blobs.put_bytes(matrix.tobytes(), FLOAT32)
        cached_id = ended.event_id("cached")
        cached = ev.EmbeddingsCached(
            document_id=document_id, chunk_set_id=ended.doc.chunk_set_id, model=embedder.model,
            provider=embedder.provider, dimensions=embedder.dimensions, vectors=ev.BlobRef.of(ref),
            text_sha256=[text_sha256(t) for t in texts_paid], tokens=sum(line.tokens for _, line in paid),
            reason=f"batch {ended.batch.batch_id} ended {ended.status}", revision=ended.doc.revision,
        )  # fmt: skip
        events += [new_event(cached, ended.meta, cached_id), *_cost_events(ended, cached_id, cost_lines)]
    reason = "; ".join(failed) or "some texts have no vector"
    message = (f"the Batch API did not embed every text ({reason}); what it did is kept and paid for. Finish "
               f"with chronos reprocess --stage embed --model {embedder.model} --document {document_id} "
               "[--batch-api]: only the missing texts are sent")  # fmt: skip
    # Final: nothing tries again by itself (the batch is over), so the document shows as failed and is
    # selected by reprocess --failed; retryable: reprocessing finishes it.
    failure = ev.EmbeddingFailed(document_id=document_id, stage="embed", error_class="BatchIncomplete",
                                 message=message, attempt=1, retryable=True, final=True,
                                 backend="openai", revision=ended.doc.revision)  # fmt: skip
    events.append(new_event(failure, ended.meta, ended.event_id("failed")))
    await rt.store.append(stream_for(document_id), events)


def _cost(
    embedder: OpenAIEmbedder, line: LineResult, custom_id: str, batch: ev.EmbeddingBatchSubmitted
) -> costs.CostLine:
    base = costs.openai_tokens(line.tokens, embedder.name, batch_api=True)
    details = {**(base.details or {}), "custom_id": custom_id, "batch_id": batch.batch_id,
               "openai_batch_id": batch.openai_batch_id}  # fmt: skip
    return costs.CostLine(base.provider, base.resource, base.quantity, base.unit_price_usd, details)


def _cost_events(ended: Ended, caused_by: uuid.UUID, lines: list[costs.CostLine]) -> list[NewEvent]:
    """The cost of the document's lines: billed line by line, one ledger line per resource (their sum)."""
    return [new_event(line.event(ended.doc.document_id, "embed", str(caused_by)), ended.meta,
                      ended.event_id(f"cost:{i}"))
            for i, line in enumerate(costs.summed(lines)) if line.quantity > 0]  # fmt: skip
