"""Search over the projections: hybrid (full-text + vector, fused by reciprocal rank), vector or text,
with filters and as of a past moment, through ``search_chunks_hybrid()`` in PostgreSQL
(sql/views/012_search_hybrid.sql, docs/search.md). The question is embedded with the model the active
vectors were made with (loaded with the runtime's settings); text mode loads no model at all."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import asyncpg
import numpy as np

from app.catalogue.collections import InvalidMetadata, parse_metadata, validate_collection_name, validate_metadata
from app.config import Settings
from app.errors import InvalidRequest, NotFound
from events.store import EventStore
from events.types import DbConn

logger = logging.getLogger(__name__)
Mode = Literal["hybrid", "vector", "text"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "text")


class NothingSearchable(NotFound):
    """No document has vectors yet: ingest documents first (chronos ingest PATH --wait)."""

    code = "nothing_searchable"


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    document_id: str
    filename: str
    ordinal: int
    text: str
    pages: list[int]
    heading_path: list[str]
    score: float
    model: str
    title: str | None = None
    char_start: int | None = None
    char_end: int | None = None
    snippet: str = ""  # the best-matching sentences, query words in **bold**
    mode: str = "vector"
    similarity: float | None = None  # cosine similarity (None: found by text only)
    vector_rank: int | None = None
    text_rank: int | None = None
    collection: str = "default"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, r: asyncpg.Record, model: str, **extra: Any) -> SearchHit:
        """A hit from a row of ``search_chunks`` or ``search_chunks_hybrid`` (``extra``: what only the
        latter returns)."""
        return cls(chunk_id=str(r["chunk_id"]), document_id=str(r["document_id"]), filename=r["filename"],
                   ordinal=r["ordinal"], text=r["text"], pages=list(r["pages"]), heading_path=list(r["heading_path"]),
                   score=float(r["score"]), model=model, **extra)  # fmt: skip


class InvalidFilter(InvalidMetadata):
    """A search filter that cannot be read (docs/search.md, "Collections and metadata"); nothing was searched."""

    code = "invalid_filter"


def parse_meta_filter(text: str) -> dict[str, Any]:
    """One metadata filter: ``KEY=VALUE`` (the top-level key equals the text VALUE) or a JSON object that
    the document's metadata must contain (``{"tags": ["hr"]}``, ``{"year": 2024}``)."""
    raw = text.strip()
    try:
        if raw.startswith("{"):
            return parse_metadata(raw, what=f"metadata filter {raw!r}")
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise InvalidFilter(
                f'metadata filter {text!r} is neither KEY=VALUE (dept=finance) nor a JSON object ({{"tags": ["hr"]}})'
            )
        return validate_metadata({key.strip(): value}, what=f"metadata filter {raw!r}")
    except InvalidFilter:
        raise
    except InvalidMetadata as exc:
        raise InvalidFilter(str(exc)) from None


@dataclass(frozen=True)
class SearchFilters:
    """Which documents a search may answer from (every given condition holds)."""

    document_ids: list[str] | None = None
    filename: str | None = None  # a glob: "*.pdf", "brief-*"; case-insensitive
    media_types: list[str] | None = None
    sources: list[str] | None = None
    uploaded_from: dt.datetime | None = None
    uploaded_to: dt.datetime | None = None
    collections: list[str] | None = None  # only these collections ([]: none at all)
    metadata: list[dict[str, Any]] | None = None  # objects the document's metadata must all contain

    def collection_names(self) -> list[str] | None:
        if self.collections is None:
            return None
        try:
            return [validate_collection_name(name) for name in self.collections]
        except InvalidRequest as exc:
            raise InvalidFilter(str(exc)) from None

    def metadata_objects(self) -> list[dict[str, Any]] | None:
        if not self.metadata:
            return None
        out = []
        for item in self.metadata:
            try:
                out.append(validate_metadata(item, what="metadata filter"))
            except InvalidMetadata as exc:
                raise InvalidFilter(str(exc)) from None
        return out

    def like_pattern(self) -> str | None:
        if not self.filename:
            return None
        escaped = self.filename.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%").replace("?", "_")

    def uuids(self) -> list[uuid.UUID] | None:
        if self.document_ids is None:
            return None
        out = []
        for raw in self.document_ids:
            try:
                out.append(uuid.UUID(raw))
            except ValueError:
                raise InvalidRequest(f"document id {raw!r} is not a UUID") from None
        return out


def parse_when(raw: str) -> dt.datetime:
    """An ISO 8601 date or timestamp (UTC when no zone is given)."""
    try:
        when = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{raw!r} is not a date or timestamp (use ISO 8601: 2026-11-24T09:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


async def resolve_as_of(pool: asyncpg.Pool, raw: str | int | None) -> int | None:
    """A log position from ``--as-of``: a position as given, or the last position recorded at or before
    a timestamp (0 when nothing was)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, int) or raw.strip().isdigit():
        position = int(raw)
        if position < 0:
            raise InvalidRequest(f"as-of position must not be negative, not {position}")
        return position
    when = parse_when(raw)
    return int(await pool.fetchval("SELECT coalesce(max(position), 0) FROM events WHERE recorded_at <= $1", when))


async def active_model(pool: asyncpg.Pool) -> tuple[str, int] | None:
    row = await pool.fetchrow("SELECT model, dimensions FROM v_search_models WHERE active")
    return (row["model"], row["dimensions"]) if row else None


async def search_vector(pool: asyncpg.Pool | DbConn, vector: np.ndarray, k: int, model: str) -> list[SearchHit]:
    rows = await pool.fetch("SELECT * FROM search_chunks($1::vector, $2, $3)", np.asarray(vector, np.float32), k, model)
    return [SearchHit.from_row(r, model, similarity=float(r["score"])) for r in rows]


async def search_rows(
    pool: asyncpg.Pool | DbConn,
    question: str,
    vector: np.ndarray | None,
    k: int,
    model: str,
    mode: str = "hybrid",
    at_position: int | None = None,
    filters: SearchFilters | None = None,
) -> list[SearchHit]:
    """``search_chunks_hybrid()`` for an embedded (or, in text mode, unembedded) question."""
    f = filters or SearchFilters()
    rows = await pool.fetch(
        "SELECT * FROM search_chunks_hybrid($1, $2::vector, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        question, None if vector is None else np.asarray(vector, np.float32), k, model, mode, at_position,
        f.uuids(), f.like_pattern(), f.media_types, f.sources, f.uploaded_from, f.uploaded_to,
        f.collection_names(), f.metadata_objects(),
    )  # fmt: skip
    return [
        SearchHit.from_row(
            r,
            model,
            title=r["title"],
            char_start=r["char_start"],
            char_end=r["char_end"],
            snippet=r["snippet"] or "",
            mode=mode,
            similarity=None if r["similarity"] is None else float(r["similarity"]),
            vector_rank=r["vector_rank"],
            text_rank=r["text_rank"],
            collection=r["collection"],
            metadata=r["metadata"],
        )
        for r in rows
    ]


async def search(
    pool: asyncpg.Pool,
    settings: Settings,
    question: str,
    k: int = 5,
    model: str | None = None,
    *,
    store: EventStore | None = None,
    actor: str = "search",
    mode: str = "hybrid",
    as_of: str | int | None = None,
    filters: SearchFilters | None = None,
) -> list[SearchHit]:
    """The ``k`` best chunks for ``question`` (``mode`` hybrid, vector or text; ``as_of`` a past moment;
    ``filters``); ``model`` defaults to the active search model. A paid query embedding is recorded as a
    cost (app.embedders.query_cost) through ``store`` (the caller's, so its notifier wakes the
    projections; one of its own on ``pool`` when None)."""
    if not question.strip():
        raise InvalidRequest("the question is empty")
    if k < 1 or k > 1000:
        raise InvalidRequest(f"k must be between 1 and 1000, not {k}")
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if filters is not None:  # a bad filter is refused before a query embedding is paid for
        filters.collection_names(), filters.metadata_objects(), filters.uuids()
    at_position = await resolve_as_of(pool, as_of)
    if model is None:
        found = await active_model(pool)
        if found is None:
            raise NothingSearchable(NothingSearchable.__doc__ or "")
        model = found[0]
    vector = None
    query_id = uuid.uuid4()
    tokens = 0
    if mode != "text":
        from app.embedders import get_embedder
        from app.embedders.query_cost import record_query_cost

        embedder = await asyncio.to_thread(get_embedder, model, settings)  # loading a model blocks: off the loop
        result = await embedder.embed([question])
        own_store = store is None
        store = store or EventStore(pool)
        await record_query_cost(store, embedder.provider, result, query_id, actor)
        if own_store:
            await store.notifier.flush()
        vector, tokens = result.vectors[0], result.tokens
    try:
        hits = await search_rows(pool, question, vector, k, model, mode, at_position, filters)
    except asyncpg.RaiseError as exc:
        raise InvalidRequest(str(exc)) from exc
    logger.info("searched", extra={"action": "search", "model": model, "k": k, "hits": len(hits), "mode": mode,
                                   "as_of": at_position, "query_id": str(query_id), "tokens": tokens,
                                   "collections": filters.collections if filters else None})  # fmt: skip
    return hits
