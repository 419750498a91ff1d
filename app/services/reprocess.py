"""Reprocess: run a stage again with new settings for chosen documents.

``plan`` selects the documents (app/services/selection.py) and quotes the spend; ``request`` appends
one ConversionRequested / ChunkingRequested / EmbeddingRequested per document; the stage workers act
on them. A paid request is quoted first (outputs that can be reused cost nothing: chunks whose text
and model are in the embedding cache) and stopped when it would cross the monthly budget, or the part
spent in a collection would cross that collection's budget (app/services/budget.py), unless the caller
allows it. An embedding with OpenAI can go through its Batch
API instead (``batch_api``: half price, results within 24 hours, recorded by ``chronos batches poll``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.ids import stream_for
from app.config import Settings
from app.errors import InvalidRequest
from app.services.budget import check_quote
from app.services.selection import Selection, select_documents
from events.blobs import PgBlobStore
from events.store import EventStore

if TYPE_CHECKING:
    from app.embedders.batch_jobs import Submitted

BACKENDS = ("auto", "local", "modal")


@dataclass(frozen=True)
class StageRequest:
    """What to run again, and with which settings (None: keep the document's own)."""

    stage: ev.Stage
    reason: str = "reprocess"
    backend: str | None = None
    pipeline: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    context_template: str | None = None  # chunk: what is embedded with each chunk (app/chunk_context.py)
    model: str | None = None
    switch: bool = False  # embed --all: a model switch (later documents are embedded with it too)
    batch_api: bool = False  # embed with OpenAI's Batch API (half price, within 24 h: app/embedders/batch_jobs.py)


@dataclass(frozen=True)
class Quote:
    resource: str | None
    quantity: float
    usd: float
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the GPU, pages, and what the price rests on

    def to_json(self) -> dict[str, Any]:
        return {**self.details, "resource": self.resource, "quantity": self.quantity, "usd": self.usd}


@dataclass
class Plan:
    request: StageRequest
    document_ids: list[str]
    quote: Quote
    requested: int = 0
    extra: list[str] = field(default_factory=list)
    batches: Submitted | None = None  # what a Batch API request submitted
    by_collection: dict[str, float] = field(default_factory=dict)  # the quote's USD per collection

    @property
    def paid(self) -> bool:
        """Does the request spend money (a priced quote, or a GPU conversion asked for)?"""
        return self.quote.usd > 0 or (self.request.stage == "convert" and self.request.backend == "modal")


def validated(request: StageRequest, settings: Settings) -> StageRequest:
    """The request with its model in canonical form; InvalidRequest for settings that cannot work."""
    if request.stage not in ev.STAGES:
        raise InvalidRequest(f"stage must be one of {', '.join(ev.STAGES)}, not {request.stage!r}")
    if request.backend is not None and request.backend not in BACKENDS:
        raise InvalidRequest(f"backend must be one of {', '.join(BACKENDS)}, not {request.backend!r}")
    if request.batch_api and request.stage != "embed":
        raise InvalidRequest("--batch-api is for --stage embed (OpenAI's Batch API)")
    if request.context_template is not None:
        if request.stage != "chunk":
            raise InvalidRequest("--context-template is for --stage chunk (what is embedded with each chunk)")
        from app.chunk_context import check_template

        check_template(request.context_template)  # ContextTemplateError (an InvalidRequest) names the field
    if request.stage != "embed":
        return request
    if not request.model:
        raise InvalidRequest(
            "--stage embed needs --model (e.g. local:all-MiniLM-L6-v2 or openai:text-embedding-3-small)"
        )
    from app.embedders import resolve_model

    spec = resolve_model(request.model, settings)  # EmbedderUnavailable (an InvalidRequest) says why not
    if spec.provider == "openai" and not settings.openai_api_key:
        raise InvalidRequest(f"{request.model!r} needs OpenAI: set OPENAI_API_KEY (and OPENAI_BASE_URL if not OpenAI)")
    if request.batch_api and spec.provider != "openai":
        raise InvalidRequest(f"--batch-api is OpenAI's Batch API; {spec.stored} runs locally")
    return StageRequest(**{**request.__dict__, "model": spec.stored})


async def quote(pool: asyncpg.Pool, request: StageRequest, ids: list[str], settings: Settings | None = None) -> Quote:
    """Estimated USD of the request: embedding tokens not in the cache (app/embedders/pricing.py), or
    the conversion's GPU time (app/convert/quote.py). ``settings``: the caller's (``plan`` passes its own;
    they only matter to name the default model)."""
    if request.stage == "embed" and request.model:
        from app.embedders.pricing import quote_embedding

        settings = settings or Settings.from_env()
        q = await quote_embedding(pool, ids, request.model, settings, batch_api=request.batch_api)
        rest = {k: v for k, v in q.items() if k not in ("resource", "quantity", "usd")}  # model, unit price, batch_api
        return Quote(q["resource"], float(q["quantity"]), float(q["usd"]), rest)
    if request.stage == "convert":
        from app.convert.quote import convert_quote

        q = await convert_quote(pool, ids, request.backend, request.pipeline)
        rest = {k: v for k, v in q.items() if k not in ("resource", "quantity", "usd")}
        return Quote(q["resource"], float(q["quantity"]), float(q["usd"]), rest)
    if request.stage == "chunk":
        from app.services.chunk_quote import quote_chunking

        q = await quote_chunking(pool, request, ids, settings or Settings.from_env())
        rest = {k: v for k, v in q.items() if k not in ("resource", "quantity", "usd")}
        return Quote(q["resource"], float(q["quantity"]), float(q["usd"]), rest)
    return Quote(None, 0, 0.0)


async def plan(pool: asyncpg.Pool, settings: Settings, selection: Selection, request: StageRequest) -> Plan:
    """The documents and the quote; nothing is appended yet."""
    request = validated(request, settings)
    ids = await select_documents(pool, selection)
    total = await quote(pool, request, ids, settings)
    by_collection = await quote_by_collection(pool, request, ids, settings, total)
    if by_collection:
        split = {c: round(u, 8) for c, u in by_collection.items()}
        total = Quote(total.resource, total.quantity, total.usd, {**total.details, "by_collection": split})
    return Plan(request, ids, total, by_collection=by_collection)


async def quote_by_collection(
    pool: asyncpg.Pool, request: StageRequest, ids: list[str], settings: Settings, total: Quote
) -> dict[str, float]:
    """The quote's USD split by the documents' collections (each collection's budget must hold its part);
    empty for a free request. Each collection's own quote weighs its share of the total (quoting groups
    apart would count shared costs, such as a GPU batch's cold start, once per group)."""
    if total.usd <= 0 or not ids:
        return {}
    from app.services.visibility import DEFAULT_COLLECTION, collections_of

    found = await collections_of(pool, ids)
    groups: dict[str, list[str]] = {}
    for doc in ids:
        groups.setdefault(found.get(doc, DEFAULT_COLLECTION), []).append(doc)
    if len(groups) == 1:
        return {next(iter(groups)): total.usd}
    alone = {c: (await quote(pool, request, docs, settings)).usd for c, docs in sorted(groups.items())}
    weight = sum(alone.values())
    if weight <= 0:
        return {c: total.usd / len(alone) for c in alone}
    return {c: total.usd * usd / weight for c, usd in alone.items()}


async def execute(
    pool: asyncpg.Pool,
    store: EventStore,
    settings: Settings,
    plan_: Plan,
    *,
    actor: str,
    over_budget_ok: bool = False,
    selection: Selection | None = None,
    blobs: PgBlobStore | None = None,
) -> Plan:
    """Append the requests of a plan (after the budget check). For a model switch over every document,
    documents that appeared since the plan was made are asked for too. A Batch API request submits the
    batches instead (``plan_.batches``; ``blobs`` keeps their input files, default: the pool's)."""
    await check_quote(pool, settings, plan_.quote.usd, over_budget_ok=over_budget_ok, by_collection=plan_.by_collection)
    if plan_.request.batch_api:
        from app.embedders.batch_jobs import submit_embedding_batches

        assert plan_.request.model is not None  # validated
        plan_.batches = await submit_embedding_batches(
            pool, store, blobs or PgBlobStore(pool), settings, plan_.document_ids, plan_.request.model,
            scope="all" if plan_.request.switch else None, reason=plan_.request.reason, actor=actor,
        )  # fmt: skip
        plan_.requested = len(plan_.document_ids) - len(plan_.batches.plan.refused)
        return plan_
    plan_.requested = await request_stage(store, plan_.request, plan_.document_ids, actor)
    if plan_.request.switch and selection is not None:
        seen = set(plan_.document_ids)
        plan_.extra = [d for d in await select_documents(pool, selection) if d not in seen]
        plan_.requested += await request_stage(store, plan_.request, plan_.extra, actor)
    return plan_


def request_event(request: StageRequest, document_id: str) -> ev.DocumentEvent:
    request_id = str(uuid.uuid4())
    if request.stage == "convert":
        return ev.ConversionRequested(document_id=document_id, request_id=request_id,
                                      backend=request.backend or "auto", pipeline=request.pipeline,
                                      reason=request.reason)  # fmt: skip
    if request.stage == "chunk":
        return ev.ChunkingRequested(document_id=document_id, request_id=request_id, chunk_size=request.chunk_size,
                                    chunk_overlap=request.chunk_overlap, reason=request.reason,
                                    context_template=request.context_template)  # fmt: skip
    if not request.model:
        raise InvalidRequest(
            "--stage embed needs --model (e.g. local:all-MiniLM-L6-v2 or openai:text-embedding-3-small)"
        )
    return ev.EmbeddingRequested(document_id=document_id, request_id=request_id, model=request.model,
                                 reason=request.reason, scope="all" if request.switch else None)  # fmt: skip


async def request_stage(store: EventStore, request: StageRequest, ids: list[str], actor: str) -> int:
    for doc in ids:
        await store.append(stream_for(doc), [new_event(request_event(request, doc), {"actor": actor})])
    return len(ids)
