"""Reprocess: run a stage again with new settings for chosen documents.

``plan`` selects the documents (app/services/selection.py) and quotes the spend; ``request`` appends
one ConversionRequested / ChunkingRequested / EmbeddingRequested per document; the stage workers act
on them. A paid request is quoted first (outputs that can be reused cost nothing: chunks whose text
and model are in the embedding cache) and stopped when it would cross the monthly budget
(app/services/budget.py) unless the caller allows it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app import costs
from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.ids import stream_for
from app.config import Settings
from app.errors import InvalidRequest
from app.services.budget import check_quote
from app.services.selection import Selection, select_documents
from events.store import EventStore

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
    model: str | None = None
    switch: bool = False  # embed --all: a model switch (later documents are embedded with it too)


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
    if request.stage != "embed":
        return request
    if not request.model:
        raise InvalidRequest(
            "--stage embed needs --model (e.g. local:all-MiniLM-L6-v2 or openai:text-embedding-3-small)"
        )
    from app.embedders import EmbedderUnavailable, parse_model

    try:
        provider, name, dimensions = parse_model(request.model, settings)
    except EmbedderUnavailable as exc:
        raise InvalidRequest(str(exc)) from exc
    if provider == "openai" and not settings.openai_api_key:
        raise InvalidRequest(f"{request.model!r} needs OpenAI: set OPENAI_API_KEY (and OPENAI_BASE_URL if not OpenAI)")
    model = f"{provider}:{name}" + (f"@{dimensions}" if dimensions else "")
    return StageRequest(**{**request.__dict__, "model": model})


async def quote(pool: asyncpg.Pool, request: StageRequest, ids: list[str]) -> Quote:
    """Estimated USD of the request: OpenAI tokens not in the cache, or Modal GPU seconds per page."""
    if request.stage == "embed" and request.model and request.model.startswith("openai:"):
        name = request.model.split(":", 1)[1].partition("@")[0]
        tokens = await pool.fetchval(
            "SELECT coalesce(sum(c.token_count), 0) FROM chunks c WHERE c.document_id = ANY($1::uuid[]) "
            "AND NOT EXISTS (SELECT 1 FROM embedding_cache e WHERE e.model = $2 "
            "AND e.text_sha256 = coalesce(c.embed_sha256, c.text_sha256))",
            ids,
            request.model,
        )
        return Quote("tokens", int(tokens), int(tokens) * costs.price(f"openai_token_{name}"))
    if request.stage == "convert":
        from app.convert.quote import convert_quote

        q = await convert_quote(pool, ids, request.backend, request.pipeline)
        rest = {k: v for k, v in q.items() if k not in ("resource", "quantity", "usd")}
        return Quote(q["resource"], float(q["quantity"]), float(q["usd"]), rest)
    return Quote(None, 0, 0.0)


async def plan(pool: asyncpg.Pool, settings: Settings, selection: Selection, request: StageRequest) -> Plan:
    """The documents and the quote; nothing is appended yet."""
    request = validated(request, settings)
    ids = await select_documents(pool, selection)
    return Plan(request, ids, await quote(pool, request, ids))


async def execute(
    pool: asyncpg.Pool,
    store: EventStore,
    settings: Settings,
    plan_: Plan,
    *,
    actor: str,
    over_budget_ok: bool = False,
    selection: Selection | None = None,
) -> Plan:
    """Append the requests of a plan (after the budget check). For a model switch over every document,
    documents that appeared since the plan was made are asked for too."""
    await check_quote(pool, settings, plan_.quote.usd, over_budget_ok=over_budget_ok)
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
                                    chunk_overlap=request.chunk_overlap, reason=request.reason)  # fmt: skip
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
