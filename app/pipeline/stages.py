"""The three stages as job handlers: each turns a job into result events (or a failure).

A handler never writes: it returns an ``Outcome`` (events to append and how the job ends) and the
worker commits the events and the job's end in one transaction. Result event ids are derived
from the job, so a retried job can never record its result twice. Where the document stands comes
from the one reducer (``app.catalogue.state``) over its stream.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from app import config
from app.catalogue import events as ev
from app.catalogue import ids
from app.catalogue.codec import decode_payload, new_event
from app.catalogue.content import embed_inputs, load_content, store_content
from app.config import Settings
from app.costs import CostLine, local_cpu, modal_usages, summed
from app.pipeline.jobs import Job
from app.pipeline.stream import DocumentStream
from app.runtime import Runtime
from events.sqlfiles import query
from events.types import NewEvent

if TYPE_CHECKING:
    from app.embedders import CachedEmbedResult, Embedder, EmbeddingError

logger = logging.getLogger(__name__)

_RESULT_KIND = {"convert": "converted", "chunk": "chunked", "embed": "embedded"}


class StageFailure(Exception):
    """A stage could not produce its result; ``retryable`` says whether trying again may help.

    ``final``: nothing is left to try (e.g. the conversion recovery ladder is exhausted), so the
    failure ends the document (quarantined with this reason) whatever the attempt count.
    ``details``: extra fields for the failure event (the Modal fallback, the attempts made, pages).
    """

    def __init__(
        self,
        error_class: str,
        message: str,
        *,
        retryable: bool,
        backend: str | None = None,
        final: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.retryable = retryable
        self.backend = backend
        self.final = final
        self.details = dict(details or {})


@dataclass
class Outcome:
    status: str  # "done" | "failed" | "retry" | "cancelled"
    events: list[NewEvent] = field(default_factory=list)
    error: str | None = None
    retry_in: float = 0.0


def _meta(job: Job, actor: str) -> dict[str, Any]:
    return {"actor": actor, "causation_id": str(job.trigger_event_id), "job_id": str(job.job_id)}


def _cost_events(
    job: Job, actor: str, stage: str, caused_by: uuid.UUID, lines: list[CostLine], key: str = ""
) -> list[NewEvent]:
    out = []
    for i, line in enumerate(lines):
        if line.quantity <= 0:
            continue
        cost = line.event(str(job.document_id), stage, str(caused_by))
        out.append(new_event(cost, _meta(job, actor), job.result_id(f"cost:{key}{i}")))
    return out


def failure_outcome(job: Job, actor: str, failure: StageFailure, backoff_base: float = 2.0) -> Outcome:
    """A failure event; retried later with exponential backoff unless final."""
    final = failure.final or (not failure.retryable) or job.attempts >= job.max_attempts
    stage: ev.Stage = job.stage  # type: ignore[assignment]
    details = {k: v for k, v in failure.details.items() if k in ("fallback", "attempts", "page_count")}
    event = msgspec.convert(
        {
            **details,
            "document_id": str(job.document_id),
            "stage": job.stage,
            "error_class": failure.error_class,
            "message": failure.message,
            "attempt": job.attempts,
            "retryable": failure.retryable,
            "final": final,
            "backend": failure.backend,
            "revision": job.params.get("revision"),
        },
        ev.FAILURES[stage],
    )
    recorded = new_event(event, _meta(job, actor), job.result_id(f"failed:{job.attempts}"))
    if final:
        return Outcome("failed", [recorded], f"{failure.error_class}: {failure.message}")
    delay = min(backoff_base * 2 ** (job.attempts - 1), 300.0)
    return Outcome("retry", [recorded], f"{failure.error_class}: {failure.message}", retry_in=delay)


async def run_stage(rt: Runtime, job: Job, actor: str) -> Outcome:
    """Run one job's stage; returns what to record. Already-recorded work is not done again."""
    if await rt.pool.fetchval(query("jobs", "event_exists"), job.result_id(_RESULT_KIND[job.stage])) is not None:
        return Outcome("done")  # recorded by an earlier attempt: never call Docling/Modal/OpenAI again
    stream = await DocumentStream.read(rt.store, job.stream)
    if stream.state is None:
        return failure_outcome(
            job, actor, StageFailure("UnknownDocument", "no DocumentUploaded in the stream", retryable=False)
        )
    if stream.state.deleted:
        return Outcome("cancelled", error="document deleted")
    wanted = job.params.get("revision")
    if wanted is not None and wanted < stream.state.revision:
        return Outcome("cancelled", error=f"superseded by revision {stream.state.revision}")
    try:
        if job.stage == "convert":
            return await _convert(rt, job, actor, stream)
        if job.stage == "chunk":
            return await _chunk(rt, job, actor, stream)
        if job.stage == "embed":
            return await _embed(rt, job, actor, stream)
        raise StageFailure("UnknownStage", f"no stage {job.stage!r}", retryable=False)
    except StageFailure as failure:
        return failure_outcome(job, actor, failure)


def _revision(job: Job, stream: DocumentStream) -> int:
    """The revision a job's results are for: the one its trigger named, else the current one."""
    assert stream.state is not None
    return int(job.params.get("revision") or stream.state.revision)


def _cannot_run(stream: DocumentStream, job: Job, missing: str, needed: str) -> Outcome:
    """A request for a stage whose input does not exist yet. While an earlier stage may still produce
    it, the request's settings are sticky (the reducer keeps them) and that stage's own job will use
    them: nothing to do now. When an earlier stage failed for good, the request can never run: a final
    failure says why, so the document stays ``failed`` (and in ``--failed`` / ``v_failures``)."""
    state = stream.state
    assert state is not None
    if state.blocked_before(job.stage):
        raise StageFailure(
            missing,
            f"cannot {job.stage}: the document has no {needed} because its {state.halted} stage failed "
            f"({state.error_class}: {state.last_error}); reprocess --stage {state.halted} first",
            retryable=False,
            final=True,
        )
    if job.params.get("request_id"):
        return Outcome("done")
    raise StageFailure(missing, f"the document has no {needed} yet", retryable=False)


# --- convert ---------------------------------------------------------------------------------


async def _blob_to_file(rt: Runtime, sha256: str, directory: Path, suffix: str) -> Path:
    path = directory / f"input{suffix}"
    with path.open("wb") as handle:
        async for piece in rt.blobs.open(sha256):
            await asyncio.to_thread(handle.write, piece)
    return path


def _suffix(media_type: str) -> str:
    return {
        "application/pdf": ".pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
        "text/html": ".html",
        "text/markdown": ".md",
        "text/csv": ".csv",
    }.get(media_type, ".bin")


def _convert_limits(settings: Settings) -> dict[str, Any]:
    """Operator overrides of the conversion limits (``Settings.convert`` / ``Settings.modal``): seconds
    per local conversion, the converter's memory cap, seconds per Modal call, and the converter seconds
    a document may use across all recovery attempts."""
    limits: dict[str, Any] = {}
    for key, value in (
        ("timeout_s", settings.convert.timeout_s),
        ("memory_mb", settings.convert.memory_mb),
        ("modal_timeout_s", settings.modal.timeout_s),
        ("budget_s", settings.convert.budget_s),
    ):
        if value is not None:
            limits[key] = value
    return limits


async def _convert(rt: Runtime, job: Job, actor: str, stream: DocumentStream) -> Outcome:
    from app.convert import ConversionFailure, ConvertOptions, convert_with_recovery
    from app.convert.sniff import unsupported

    up = stream.state
    assert up is not None and up.sha256 is not None
    media_type = up.media_type or "application/octet-stream"
    refused = unsupported(media_type, up.filename, up.size or 0)
    if refused is not None:
        raise StageFailure(refused[0], refused[1], retryable=False)
    params = job.params
    options = ConvertOptions(
        backend=params.get("backend") or "auto",
        pipeline=params.get("pipeline") or "default",
        **_convert_limits(config.current()),  # read at the job, as the converters read theirs
    )
    settings_hash = options.settings_hash()
    result_id = job.result_id("converted")
    meta = _meta(job, actor)

    reused = await rt.pool.fetchrow(query("jobs", "find_conversion"), up.sha256, settings_hash)
    explicit_backend = params.get("backend") not in (None, "auto")
    if reused is not None and not (explicit_backend and reused["data"]["backend"] != params.get("backend")):
        earlier = decode_payload(ev.DocumentConverted.TYPE, reused["schema_version"], reused["data"])
        assert isinstance(earlier, ev.DocumentConverted)
        again = msgspec.structs.replace(
            earlier, document_id=str(job.document_id), conversion_id=str(result_id),
            reused_from=earlier.conversion_id, fallback=None, revision=_revision(job, stream),
        )  # fmt: skip
        return Outcome("done", [new_event(again, meta, result_id)])

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chronos-convert-") as tmp:
        path = await _blob_to_file(rt, up.sha256, Path(tmp), _suffix(media_type))
        try:
            # Time/memory failures go down the recovery ladder (other backend, page slices) within
            # this attempt; what comes out is either a result or a failure saying whether anything
            # is left to try (``final``: the document is quarantined with the reason).
            output = await convert_with_recovery(path, filename=up.filename, media_type=media_type, options=options)
        except ConversionFailure as exc:
            # A failure can still have cost Modal container time (a cancelled or failed call): its
            # cost lines go with the failure event, keyed by the attempt so a retry records its own.
            failed = failure_outcome(job, actor, _conversion_failure(exc, options))
            paid = modal_usages(exc.modal_usage)
            failed.events += _cost_events(
                job, actor, "convert", failed.events[0].event_id, paid, key=f"failed:{job.attempts}:"
            )
            return failed
    docling_ref = await rt.blobs.put_bytes(output.docling_json, "application/json")
    markdown_ref = await rt.blobs.put_bytes(output.markdown.encode("utf-8"), "text/markdown")
    converted = ev.DocumentConverted(
        document_id=str(job.document_id),
        conversion_id=str(result_id),
        input_sha256=up.sha256,
        backend=output.backend,
        pipeline=output.pipeline,
        docling_version=output.docling_version,
        page_count=output.page_count,
        durations=ev.Durations(total_s=round(time.perf_counter() - started, 3), convert_s=round(output.convert_s, 3)),
        docling_json=ev.BlobRef.of(docling_ref),
        markdown=ev.BlobRef.of(markdown_ref),
        settings_hash=settings_hash,
        fallback=msgspec.convert(output.fallback, ev.Fallback) if output.fallback else None,
        reused_from=None,
        slices=output.slices,
        gpu=output.gpu,
        revision=_revision(job, stream),
    )
    # Modal: GPU, CPU and memory of the container time this document held (its share of the batch,
    # the cold start and the idle tail), including attempts that did not produce this result.
    lines: list[CostLine] = modal_usages(output.modal_usage)
    if output.cpu_s > 0:
        lines.append(local_cpu(output.cpu_s))
    elif output.backend == "local":
        # Too short for the CPU clock's ticks (a small Markdown file): every local conversion still
        # has its ledger line, priced by its wall time (an upper bound of the CPU it used).
        lines.append(local_cpu(max(output.convert_s, 1e-6)))
    events = [new_event(converted, meta, result_id)]
    events += _cost_events(job, actor, "convert", result_id, lines)
    return Outcome("done", events)


def _conversion_failure(exc: Any, options: Any) -> StageFailure:
    """A ``ConversionFailure`` as the stage's failure: final/retryable, backend, fallback and attempts."""
    details: dict[str, Any] = {}
    if getattr(exc, "fallback", None):
        details["fallback"] = exc.fallback
    if getattr(exc, "attempts", None):
        details["attempts"] = list(exc.attempts)
    if getattr(exc, "page_count", None) is not None:
        details["page_count"] = exc.page_count
    final = bool(exc.final)
    return StageFailure(
        exc.error_class,
        exc.message,
        retryable=bool(exc.retryable) and not final,
        backend=exc.backend or options.resolved_backend(),
        final=final,
        details=details,
    )


# --- chunk -----------------------------------------------------------------------------------


async def _chunk(rt: Runtime, job: Job, actor: str, stream: DocumentStream) -> Outcome:
    from app.chunk_context import ContextTemplateError
    from app.chunking import ChunkingError
    from app.embedders import EmbedderUnavailable
    from app.pipeline.chunk_plan import ChunkRequest, chunk_conversion, sizing_embedder

    state = stream.state
    assert state is not None
    conversion = stream.conversions.get(job.params.get("conversion_id", "")) or stream.current_conversion
    if conversion is None:
        return _cannot_run(stream, job, "NoConversion", "conversion to chunk")
    wanted = ChunkRequest.of(job.params, state)
    try:
        embedder = await sizing_embedder(rt.pool, rt.settings, state.model)
    except EmbedderUnavailable as exc:
        raise StageFailure("UnknownModel", f"cannot size chunks for the embedder: {exc}", retryable=False) from exc
    try:
        chunks, contents, parameters = await chunk_conversion(rt.blobs, embedder, state, conversion, wanted)
    except (ChunkingError, ContextTemplateError) as exc:
        # Deterministic: the same settings and conversion fail the same way every time.
        raise StageFailure(
            "ChunkingError",
            f"{exc} (chunk_size={wanted.chunk_size}, chunk_overlap={wanted.chunk_overlap}; "
            "reprocess --stage chunk with other settings)",
            retryable=False,
            final=True,
        ) from exc
    if not chunks:
        raise StageFailure(
            "NoText",
            f"{state.filename or 'document'}: no text could be extracted "
            "(a scanned PDF needs OCR: reprocess with --backend modal or the standard pipeline)",
            retryable=False,
        )
    chunk_set_id = ids.chunk_set_id_for(conversion.conversion_id, ids.stable_hash(msgspec.to_builtins(parameters)))
    result_id = job.result_id("chunked")
    meta = _meta(job, actor)
    if str(chunk_set_id) in stream.chunk_sets:
        if stream.latest_chunk_set_id == str(chunk_set_id):
            # The current chunk set again: record that the request is settled, append no second copy.
            unchanged = ev.ChunkingUnchanged(
                document_id=str(job.document_id), chunk_set_id=str(chunk_set_id),
                conversion_id=conversion.conversion_id, request_id=job.params.get("request_id"),
                revision=_revision(job, stream),
            )  # fmt: skip
            return Outcome("done", [new_event(unchanged, meta, result_id)])
        # An earlier set's settings again (A -> B -> A): a new set of its own (its texts are cached, so
        # embedding it is free); a set id the stream holds already is never appended twice.
        chunk_set_id = ids.chunk_set_id_again(chunk_set_id, result_id)
    bare, content = await store_content(rt.blobs, chunks, contents)  # texts in a blob that deleting collects
    chunked = ev.DocumentChunked(
        document_id=str(job.document_id),
        chunk_set_id=str(chunk_set_id),
        conversion_id=conversion.conversion_id,
        parameters=parameters,
        chunks=bare,
        content=content,
        revision=_revision(job, stream),
    )
    return Outcome("done", [new_event(chunked, meta, result_id)])


# --- embed -----------------------------------------------------------------------------------


async def switch_targets(rt: Runtime) -> list[str]:
    """Models an ``--all`` embedding reprocess asked for (app/pipeline/chunk_plan.py)."""
    from app.pipeline.chunk_plan import switch_targets as targets

    return await targets(rt.pool)


async def _embed(rt: Runtime, job: Job, actor: str, stream: DocumentStream) -> Outcome:
    from app.embedders import EmbedderUnavailable, EmbeddingError, embed_with_cache, get_embedder
    from app.embedders.salvage import salvaged_vectors

    state = stream.state
    assert state is not None
    if job.params.get("request_id") in stream.batch_requests:
        return Outcome("done")  # embedded by an OpenAI Batch API job: its poller records the result
    chunk_set = stream.chunk_sets.get(job.params.get("chunk_set_id", "")) or stream.current_chunk_set
    if chunk_set is None:
        # E.g. a model switch reached a document still converting: the requested model is sticky, so
        # the embed job of its first chunk set uses it.
        return _cannot_run(stream, job, "NoChunks", "chunk set to embed")
    requested = job.params.get("model")
    models: list[str | None] = [requested or state.model]
    if not requested:
        # A new chunk set (new document, or re-chunked) is embedded with the document's model and also
        # with the target of a model switch in progress (``reprocess --stage embed --model X --all``), so
        # the new model comes to cover every document and search can switch over.
        models += await switch_targets(rt)
    embedders: list[Embedder] = []
    for i, name in enumerate(models):
        try:
            embedder = await asyncio.to_thread(get_embedder, name, rt.settings)
        except (EmbedderUnavailable, ValueError, KeyError) as exc:
            if i > 0:
                logger.warning("model switch target %r is not usable here: %s", name, exc)
                continue
            raise StageFailure("UnknownModel", str(exc), retryable=False) from exc
        if all(e.model != embedder.model for e in embedders):
            embedders.append(embedder)
    if not requested:
        # A new or unchanged chunk set: a model that already embedded it has nothing to add.
        embedders = [e for e in embedders if not state.is_embedded(chunk_set.chunk_set_id, e.model)]
        if not embedders:
            return Outcome("done")
    texts = embed_inputs(await load_content(rt.blobs, chunk_set))  # context + text (issue 14)
    done: list[tuple[Embedder, CachedEmbedResult, ev.BlobRef]] = []
    for embedder in embedders:
        try:
            known = await salvaged_vectors(rt.blobs, stream.cached, embedder)
            result = await embed_with_cache(rt.pool, embedder, texts, known=known)
        except EmbeddingError as exc:
            # Paid results are kept: the models done so far (model-qualified ids, so a retry still runs
            # the rest) and the requests of this one that succeeded, with a cost line each.
            failure = StageFailure(type(exc).__name__, str(exc), retryable=bool(getattr(exc, "retryable", True)),
                                   backend=embedder.provider)  # fmt: skip
            outcome = failure_outcome(job, actor, failure)
            kept = _embedded_events(job, actor, chunk_set, done, _revision(job, stream), qualified=True)
            if exc.partial is not None and exc.partial.texts:
                kept += await _cached_events(rt, job, actor, chunk_set, embedder, exc, _revision(job, stream))
            outcome.events[:0] = kept
            return outcome
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
        ref = await rt.blobs.put_bytes(vectors.tobytes(), "application/x-float32")
        done.append((embedder, result, ev.BlobRef.of(ref)))
    return Outcome("done", _embedded_events(job, actor, chunk_set, done, _revision(job, stream), qualified=False))


def _embedded_events(
    job: Job,
    actor: str,
    chunk_set: ev.DocumentChunked,
    done: list[tuple[Embedder, CachedEmbedResult, ev.BlobRef]],
    revision: int,
    *,
    qualified: bool,
) -> list[NewEvent]:
    """ChunksEmbedded + cost lines per model. The first model's result keeps the plain id (run_stage:
    never embedded twice) unless ``qualified`` (the job failed later and will run again)."""
    events: list[NewEvent] = []
    meta = _meta(job, actor)
    for n, (embedder, result, ref) in enumerate(done):
        plain = n == 0 and not qualified
        key = "" if plain else f"{embedder.model}:"
        result_id = job.result_id("embedded" if plain else f"embedded:{embedder.model}")
        vectors = result.vectors
        embedded = ev.ChunksEmbedded(
            document_id=str(job.document_id),
            chunk_set_id=chunk_set.chunk_set_id,
            model=embedder.model,
            provider=embedder.provider,
            dimensions=int(vectors.shape[1]) if vectors.ndim == 2 and vectors.shape[0] else embedder.dimensions,
            vectors=ref,
            chunk_count=len(chunk_set.chunks),
            reused_count=result.reused_count,
            tokens=result.tokens,
            revision=revision,
        )
        events.append(new_event(embedded, meta, result_id))
        events += _cost_events(job, actor, "embed", result_id, summed(result.cost), key=key)
    return events


async def _cached_events(
    rt: Runtime,
    job: Job,
    actor: str,
    chunk_set: ev.DocumentChunked,
    embedder: Embedder,
    exc: EmbeddingError,
    revision: int,
) -> list[NewEvent]:
    """EmbeddingsCached for the requests that succeeded before ``exc``, and their cost lines."""
    from app.embedders.salvage import cached_event

    partial = exc.partial
    assert partial is not None
    matrix = np.ascontiguousarray(partial.vectors, dtype=np.float32)
    ref = await rt.blobs.put_bytes(matrix.tobytes(), "application/x-float32")
    cached = cached_event(
        document_id=str(job.document_id), chunk_set_id=chunk_set.chunk_set_id, embedder=embedder, partial=partial,
        reason=f"{type(exc).__name__}: {exc}", vectors=ev.BlobRef.of(ref), revision=revision,
    )  # fmt: skip
    key = f"cached:{job.attempts}:{embedder.model}"
    event_id = job.result_id(key)
    events = [new_event(cached, _meta(job, actor), event_id)]
    return events + _cost_events(job, actor, "embed", event_id, summed(partial.cost), key=key + ":")
