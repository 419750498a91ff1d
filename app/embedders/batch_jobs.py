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
gets an ``EmbeddingFailed`` (not final) saying how to finish it. Then ``EmbeddingBatchFinished``.
Every event id is derived from the batch and the document, and a document that holds this batch's
result already is skipped, so a poller killed half-way and started again records nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app import costs, domain
from app.embedders.base import EmbedderUnavailable, text_sha256
from app.embedders.batch_api import FINISHED, BatchApi, BatchResults, LineResult, batch_errors, input_texts
from app.embedders.batch_plan import Plan, plan_batches
from app.embedders.cache import cached_vectors
from app.embedders.openai import OpenAIEmbedder
from app.embedders.salvage import salvaged_vectors
from app.pipeline.history import DocumentHistory
from app.runtime import Runtime
from events.blobs import BlobRef
from events.sqlfiles import query
from events.types import NewEvent

log = logging.getLogger(__name__)
BATCH_NAMESPACE = uuid.UUID("9a4e2c71-3f5b-4d08-8e6a-1b7c0d9f2e54")
_RESULTS = frozenset({domain.CHUNKS_EMBEDDED, domain.EMBEDDINGS_CACHED, domain.EMBEDDING_FAILED})


def batch_stream(batch_id: str) -> str:
    return f"embedding-batch-{batch_id}"


def _id(batch_id: str, *parts: object) -> uuid.UUID:
    return uuid.uuid5(BATCH_NAMESPACE, ":".join([batch_id, *map(str, parts)]))


def _ref(ref: BlobRef, media_type: str) -> domain.BlobRefJSON:
    return {"sha256": ref.sha256, "size": ref.size, "media_type": media_type}


def batch_embedder(rt: Runtime, model: str) -> OpenAIEmbedder:
    from app.embedders import get_embedder

    embedder = get_embedder(model, rt.settings)
    if not isinstance(embedder, OpenAIEmbedder):
        raise EmbedderUnavailable(f"--batch-api is OpenAI's Batch API; {embedder.model} runs locally")
    return embedder


@dataclass
class Submitted:
    batches: list[dict[str, Any]] = field(default_factory=list)  # EmbeddingBatchSubmitted payloads
    plan: Plan = field(default_factory=Plan)


async def submit_embedding_batches(
    rt: Runtime, document_ids: list[str], model: str, *, scope: str | None, reason: str, actor: str
) -> Submitted:
    embedder = batch_embedder(rt, model)
    plan = await plan_batches(rt.pool, rt.store, rt.blobs, embedder, document_ids)
    report = Submitted(plan=plan)
    api = BatchApi(embedder)
    for batch in plan.batches:
        batch_id = str(uuid.uuid4())
        jsonl = batch.jsonl()
        ref = await rt.blobs.put_bytes(jsonl, "application/jsonl")
        openai_id, file_id = await api.submit(jsonl, batch_id)
        documents: list[domain.EmbeddingBatchDocumentJSON] = [
            {"document_id": d.document_id, "chunk_set_id": d.chunk_set_id,
             "request_id": str(_id(batch_id, d.document_id, "request")), "custom_ids": d.custom_ids}
            for d in batch.documents
        ]  # fmt: skip
        data: domain.EmbeddingBatchSubmittedData = {
            "batch_id": batch_id, "openai_batch_id": openai_id, "input_file_id": file_id,
            "input": _ref(ref, "application/jsonl"), "model": embedder.model, "dimensions": embedder.dimensions,
            "documents": documents, "requests": batch.requests, "inputs": batch.inputs,
            "estimated_tokens": _estimate(embedder, jsonl),
            "scope": scope,
        }  # fmt: skip
        meta = {"actor": actor, "batch_id": batch_id}
        try:
            await rt.store.append(batch_stream(batch_id), [NewEvent(domain.EMBEDDING_BATCH_SUBMITTED, dict(data), meta,
                                                                   event_id=_id(batch_id, "submitted"))])  # fmt: skip
        except Exception:
            log.error("Could not record a submitted batch; cancelling it", extra={"openai_batch_id": openai_id})
            await api.cancel(openai_id)
            raise
        for doc in documents:
            await _request(rt, data, doc, reason, meta)
        report.batches.append(dict(data))
    for plain in plan.nothing_to_send + plan.no_chunks:  # the embed stage does these (free, or when chunked)
        request: dict[str, Any] = {"document_id": plain, "request_id": str(uuid.uuid4()), "model": embedder.model,
                                   "reason": reason}  # fmt: skip
        if scope:
            request["scope"] = scope
        await rt.store.append(domain.stream_for(plain), [NewEvent(domain.EMBEDDING_REQUESTED, request,
                                                                {"actor": actor})])  # fmt: skip
    return report


def _estimate(embedder: OpenAIEmbedder, jsonl: bytes) -> int:
    return sum(sum(embedder.count_tokens(texts)) for texts in input_texts(jsonl).values())


async def _request(
    rt: Runtime, batch: Mapping[str, Any], doc: Mapping[str, Any], reason: str, meta: dict[str, Any]
) -> None:
    """The document's EmbeddingRequested for this batch (same id every time: appending it again is a no-op)."""
    data: dict[str, Any] = {"document_id": doc["document_id"], "request_id": doc["request_id"],
                            "model": batch["model"], "reason": reason, "batch_id": batch["batch_id"]}  # fmt: skip
    if batch.get("scope"):
        data["scope"] = batch["scope"]
    event = NewEvent(domain.EMBEDDING_REQUESTED, data, meta, event_id=uuid.UUID(doc["request_id"]))
    await rt.store.append(domain.stream_for(doc["document_id"]), [event])


@dataclass
class BatchState:
    batch_id: str
    openai_batch_id: str
    status: str
    finished: dict[str, Any] | None = None


async def poll_embedding_batches(rt: Runtime, actor: str = "batches") -> list[BatchState]:
    """Look up every open batch once; record the ones that have ended. Returns each batch's state."""
    states: list[BatchState] = []
    for row in await rt.pool.fetch(query("embeddings", "open_embedding_batches")):
        data = dict(row["data"])
        embedder = batch_embedder(rt, data["model"])
        remote = await BatchApi(embedder).status(data["openai_batch_id"])
        state = BatchState(data["batch_id"], data["openai_batch_id"], str(remote.status))
        log.info("Embedding batch %s is %s", data["batch_id"], remote.status, extra={
            "action": "batch_poll", "batch_id": data["batch_id"], "openai_batch_id": data["openai_batch_id"],
            "status": remote.status, "request_counts": str(getattr(remote, "request_counts", None))})
        if remote.status in FINISHED:
            state.finished = await _finish(rt, embedder, data, row["event_id"], remote, actor)
        states.append(state)
    return states


async def _finish(
    rt: Runtime, embedder: OpenAIEmbedder, batch: dict[str, Any], submitted_id: uuid.UUID, remote: Any, actor: str
) -> dict[str, Any]:
    api = BatchApi(embedder)
    output = await api.download(getattr(remote, "output_file_id", None))
    errors = await api.download(getattr(remote, "error_file_id", None))
    results = BatchResults()
    for raw in (output, errors):
        if raw:
            results.add_output(raw, embedder.dimensions)
    inputs = input_texts(await rt.blobs.get_bytes(batch["input"]["sha256"]))
    vectors: dict[str, np.ndarray] = {}
    for custom_id, texts in inputs.items():
        line = results.lines.get(custom_id)
        if line is not None and line.vectors is not None and len(line.vectors) == len(texts):
            vectors.update({text_sha256(t): v for t, v in zip(texts, line.vectors, strict=True)})
    why = batch_errors(remote) if remote.status != "completed" else None
    meta = {"actor": actor, "batch_id": batch["batch_id"], "causation_id": str(submitted_id)}
    summary = Summary()
    for doc in batch["documents"]:
        await _record_document(rt, embedder, batch, doc, inputs, results, vectors, str(remote.status), why, meta,
                               summary)  # fmt: skip
    finished: domain.EmbeddingBatchFinishedData = {
        "batch_id": batch["batch_id"], "openai_batch_id": batch["openai_batch_id"], "status": str(remote.status),
        "output": _ref(await rt.blobs.put_bytes(output, "application/jsonl"), "application/jsonl") if output else None,
        "errors": _ref(await rt.blobs.put_bytes(errors, "application/jsonl"), "application/jsonl") if errors else None,
        "embedded_documents": summary.embedded, "incomplete_documents": summary.incomplete,
        "tokens": summary.tokens, "amount_usd": round(summary.usd, 10),
    }  # fmt: skip
    await rt.store.append(batch_stream(batch["batch_id"]), [NewEvent(
        domain.EMBEDDING_BATCH_FINISHED, dict(finished), meta, event_id=_id(batch["batch_id"], "finished"))])
    log.info("Recorded embedding batch %s (%s)", batch["batch_id"], remote.status, extra={
        "action": "batch_finish", "batch_id": batch["batch_id"], "embedded": len(summary.embedded),
        "incomplete": len(summary.incomplete), "tokens": summary.tokens})
    return dict(finished)


@dataclass
class Summary:
    embedded: list[str] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    usd: float = 0.0


async def _record_document(
    rt: Runtime, embedder: OpenAIEmbedder, batch: dict[str, Any], doc: dict[str, Any],
    inputs: dict[str, list[str]], results: BatchResults, vectors: dict[str, np.ndarray], status: str,
    why: str | None, meta: dict[str, Any], summary: Summary,
) -> None:  # fmt: skip
    document_id, batch_id = str(doc["document_id"]), str(batch["batch_id"])
    history = DocumentHistory.of(await rt.store.read_stream(domain.stream_for(document_id)))
    lines = [(cid, results.lines.get(cid) or LineResult(error=why or "no result for this request")) for cid in
             doc["custom_ids"]]  # fmt: skip
    paid = [(cid, line) for cid, line in lines if line.vectors is not None]
    cost_lines = [_cost(embedder, line, cid, batch) for cid, line in paid]
    summary.tokens += sum(line.tokens for _, line in paid)
    summary.usd += sum(c.amount_usd for c in cost_lines)
    chunk_set = history.chunk_sets.get(str(doc["chunk_set_id"]))
    if history.deleted or chunk_set is None:
        summary.incomplete[document_id] = "deleted meanwhile" if history.deleted else "its chunk set is gone"
        return
    if any(e.type in _RESULTS and e.metadata.get("batch_id") == batch_id for e in history.events):
        _count_recorded(history, batch_id, document_id, summary)
        return  # recorded by an earlier run of the poller
    await _request(rt, batch, doc, "batch", meta)  # in case the submitter stopped before appending it
    texts = [c["text"] for c in chunk_set["chunks"]]
    hashes = [text_sha256(t) for t in texts]
    known = dict(vectors)
    known.update(await salvaged_vectors(rt.blobs, history.events, embedder))
    known.update(await cached_vectors(rt.pool, embedder, [h for h in hashes if h not in known]))
    stream = domain.stream_for(document_id)
    failed = [f"{cid}: {line.error}" for cid, line in lines if line.vectors is None]
    if all(h in known for h in hashes) and not failed:
        matrix = np.ascontiguousarray(np.stack([known[h] for h in hashes]) if hashes else
                                      np.zeros((0, embedder.dimensions)), dtype=np.float32)  # fmt: skip
        ref = await rt.blobs.put_bytes(matrix.tobytes(), "application/x-float32")
        result_id = _id(batch_id, document_id, "embedded")
        sent = sum(len(inputs.get(cid, [])) for cid, _ in paid)
        data: domain.ChunksEmbeddedData = {
            "document_id": document_id, "chunk_set_id": str(doc["chunk_set_id"]), "model": embedder.model,
            "provider": embedder.provider, "dimensions": embedder.dimensions,
            "vectors": _ref(ref, "application/x-float32"), "chunk_count": len(texts),
            "reused_count": max(0, len(texts) - sent), "tokens": sum(line.tokens for _, line in paid),
        }  # fmt: skip
        events = [NewEvent(domain.CHUNKS_EMBEDDED, dict(data), meta, event_id=result_id)]
        events += _cost_events(batch_id, document_id, result_id, cost_lines, meta)
        await rt.store.append(stream, events)
        summary.embedded.append(document_id)
        return
    events = []
    if paid:
        texts_paid = [t for cid, _ in paid for t in inputs.get(cid, [])]
        matrix = np.ascontiguousarray(np.concatenate([line.vectors for _, line in paid if line.vectors is not None]),
                                      dtype=np.float32)  # fmt: skip
        ref = await rt.blobs.put_bytes(matrix.tobytes(), "application/x-float32")
        cached_id = _id(batch_id, document_id, "cached")
        cached: domain.EmbeddingsCachedData = {
            "document_id": document_id, "chunk_set_id": str(doc["chunk_set_id"]), "model": embedder.model,
            "provider": embedder.provider, "dimensions": embedder.dimensions,
            "vectors": _ref(ref, "application/x-float32"), "text_sha256": [text_sha256(t) for t in texts_paid],
            "tokens": sum(line.tokens for _, line in paid), "reason": f"batch {batch_id} ended {status}",
        }  # fmt: skip
        events.append(NewEvent(domain.EMBEDDINGS_CACHED, dict(cached), meta, event_id=cached_id))
        events += _cost_events(batch_id, document_id, cached_id, cost_lines, meta)
    reason = "; ".join(failed) or "some texts have no vector"
    message = (f"the Batch API did not embed every text ({reason}); what it did is kept and paid for. Finish "
               f"with chronos reprocess --stage embed --model {embedder.model} --document {document_id} "
               "[--batch-api]: only the missing texts are sent")  # fmt: skip
    failure: domain.StageFailedData = {
        "document_id": document_id, "stage": "embed", "error_class": "BatchIncomplete", "message": message,
        "attempt": 1, "retryable": True, "final": False, "backend": "openai",
    }  # fmt: skip
    events.append(NewEvent(domain.EMBEDDING_FAILED, dict(failure), meta, event_id=_id(batch_id, document_id, "failed")))
    await rt.store.append(stream, events)
    summary.incomplete[document_id] = reason


def _count_recorded(history: DocumentHistory, batch_id: str, document_id: str, summary: Summary) -> None:
    if any(e.type == domain.CHUNKS_EMBEDDED and e.metadata.get("batch_id") == batch_id for e in history.events):
        summary.embedded.append(document_id)
    else:
        summary.incomplete[document_id] = "recorded by an earlier run"


def _cost(embedder: OpenAIEmbedder, line: LineResult, custom_id: str, batch: dict[str, Any]) -> costs.CostLine:
    base = costs.openai_tokens(line.tokens, embedder.name, batch_api=True)
    details = {**(base.details or {}), "custom_id": custom_id, "batch_id": str(batch["batch_id"]),
               "openai_batch_id": str(batch["openai_batch_id"])}  # fmt: skip
    return costs.CostLine(base.provider, base.resource, base.quantity, base.unit_price_usd, details)


def _cost_events(
    batch_id: str, document_id: str, caused_by: uuid.UUID, lines: list[costs.CostLine], meta: dict[str, Any]
) -> list[NewEvent]:
    return [NewEvent(domain.COST_INCURRED, dict(line.event_data(document_id, "embed", str(caused_by))), meta,
                     event_id=_id(batch_id, document_id, "cost", (line.details or {}).get("custom_id", i)))
            for i, line in enumerate(lines) if line.quantity > 0]  # fmt: skip
