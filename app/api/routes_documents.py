"""``/documents``: upload, list, inspect, reprocess, delete."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import uuid
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app import domain
from app.api import timeline
from app.api.auth import reads, writes
from app.api.common import document_id, event_json, int_param, json_body, runtime
from app.api.errors import ApiError
from app.api.responses import json_response
from app.api.uploads import open_upload
from app.pipeline.intake import IntakeResult, ingest_stream
from app.runtime import Runtime
from events.sqlfiles import query
from events.types import RecordedEvent

STATUSES = (
    "uploaded",
    "converting",
    "converted",
    "chunking",
    "chunked",
    "embedding",
    "searchable",
    "failed",
    "deleted",
)
MAX_IDEMPOTENCY_KEY = 255


def intake_json(result: IntakeResult) -> dict[str, Any]:
    return {
        "document_id": result.document_id,
        "created": result.created,
        "filename": result.filename,
        "media_type": result.media_type,
        "size": result.size,
        "sha256": result.sha256,
        "position": result.position,
        "links": links(result.document_id),
    }


def links(doc: str) -> dict[str, str]:
    base = f"/documents/{doc}"
    return {"self": base, "events": f"{base}/events", "markdown": f"{base}/markdown", "chunks": f"{base}/chunks"}


def intake_response(result: IntakeResult) -> Response:
    return json_response(
        intake_json(result),
        status=202 if result.created else 200,
        headers={"Location": f"/documents/{result.document_id}"},
    )


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ApiError(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key


@writes
async def upload(request: Request) -> Response:
    rt = runtime(request)
    key = idempotency_key(request)
    body = await open_upload(request)
    result = await ingest_stream(
        rt.store,
        rt.blobs,
        body.chunks,
        filename=body.filename,
        source="api",
        actor="api",
        declared_media_type=body.declared_media_type,
        max_bytes=rt.settings.max_upload_bytes,
        reject_unsupported=True,
        idempotency_key=key,
    )
    return intake_response(result)


def _encode_cursor(row: asyncpg.Record) -> str:
    uploaded: dt.datetime = row["uploaded_at"] or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    raw = f"{uploaded.isoformat()}|{row['document_id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        stamp, _, doc = raw.partition("|")
        return dt.datetime.fromisoformat(stamp), uuid.UUID(doc)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API handed out") from None


def document_row_json(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in dict(row).items() if k not in ("stream_version", "sha256")}
    out["document_id"] = str(out["document_id"])
    if out.get("total_cost_usd") is not None:
        out["total_cost_usd"] = float(out["total_cost_usd"])
    for key in ("conversion_id", "chunk_set_id"):
        if out.get(key) is not None:
            out[key] = str(out[key])
    return out


@reads
async def list_documents(request: Request) -> Response:
    rt = runtime(request)
    limit = int_param(request, "limit", 50, 1, 500)
    statuses = None
    raw_status = request.query_params.get("status")
    if raw_status:
        statuses = [s.strip() for s in raw_status.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise ApiError(400, "invalid_parameter", f"unknown status {unknown[0]!r}; one of {', '.join(STATUSES)}")
    after: tuple[dt.datetime | None, uuid.UUID | None] = (None, None)
    if request.query_params.get("cursor"):
        after = _decode_cursor(request.query_params["cursor"])
    rows = await rt.pool.fetch(query("api", "documents_page"), statuses, after[0], after[1], limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        {
            "documents": [document_row_json(r) for r in rows],
            "next_cursor": _encode_cursor(rows[-1]) if more else None,
        }
    )


async def _stream_events(rt: Runtime, doc: str) -> list[RecordedEvent]:
    events = await rt.store.read_stream(domain.stream_for(doc), limit=100_000)
    if not any(e.type == domain.DOCUMENT_UPLOADED for e in events):
        raise ApiError(404, "not_found", f"no document {doc}")
    return events


@reads
async def get_document(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    events = await _stream_events(rt, doc)
    state = timeline.document_state(events)
    assert state is not None
    jobs = [dict(r) for r in await rt.pool.fetch(query("api", "document_jobs"), uuid.UUID(doc))]
    body = document_row_json(state)
    body.update(
        sha256=state.get("sha256"),
        stream_version=events[-1].stream_version,
        last_position=max(e.position for e in events),
        stages=timeline.stages(events, jobs),
        costs=timeline.costs(events),
        errors=timeline.errors(events),
        links=links(doc),
    )
    return json_response(body)


@reads
async def document_events(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    after = int_param(request, "after_version", 0, 0, 2**31 - 1)
    limit = int_param(request, "limit", 1000, 1, 10_000)
    await _stream_events(rt, doc)
    events = await rt.store.read_stream(domain.stream_for(doc), after, limit)
    data = request.query_params.get("data", "full")
    if data not in ("full", "summary", "none"):
        raise ApiError(400, "invalid_parameter", "data must be full, summary or none")
    return json_response({"document_id": doc, "events": [event_json(e, data=data) for e in events]})


@reads
async def document_markdown(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    events = await _stream_events(rt, doc)
    if (timeline.document_state(events) or {}).get("status") == "deleted":
        raise ApiError(410, "deleted", f"document {doc} was deleted")
    converted = [e for e in events if e.type == domain.DOCUMENT_CONVERTED]
    if not converted:
        raise ApiError(409, "not_ready", f"document {doc} has not been converted yet")
    ref = converted[-1].data["markdown"]
    if await rt.blobs.stat(ref["sha256"]) is None:
        raise ApiError(410, "deleted", f"the Markdown of document {doc} is no longer stored")
    return StreamingResponse(
        rt.blobs.open(ref["sha256"]),
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Length": str(ref["size"]), "X-Conversion-Id": str(converted[-1].data["conversion_id"])},
    )


@reads
async def document_chunks(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    after = int_param(request, "after", -1, -1, 2**31 - 1)
    limit = int_param(request, "limit", 100, 1, 1000)
    await _stream_events(rt, doc)
    rows = await rt.pool.fetch(query("api", "chunks_page"), uuid.UUID(doc), after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    chunks = [
        {
            "chunk_id": str(r["chunk_id"]),
            "chunk_set_id": str(r["chunk_set_id"]),
            "ordinal": r["ordinal"],
            "text": r["text"],
            "pages": list(r["pages"]),
            "heading_path": list(r["heading_path"]),
            "char_start": r["char_start"],
            "char_end": r["char_end"],
            "token_count": r["token_count"],
        }
        for r in rows
    ]
    return json_response(
        {"document_id": doc, "chunks": chunks, "next_after": chunks[-1]["ordinal"] if more and chunks else None}
    )


@writes
async def reprocess(request: Request) -> Response:
    from app.commands.costs import month_to_date
    from app.commands.reprocess import quote
    from app.commands.reprocess import request as request_stage
    from app.embedders.base import EmbedderUnavailable

    rt = runtime(request)
    doc = document_id(request)
    body = await json_body(request)
    events = await _stream_events(rt, doc)
    state = timeline.document_state(events) or {}
    if state.get("status") == "deleted":
        raise ApiError(409, "deleted", f"document {doc} was deleted; upload it again instead")
    stage = body.get("stage") or state.get("failed_stage") or "convert"
    if stage not in domain.STAGES:
        raise ApiError(400, "invalid_parameter", f"stage must be one of {', '.join(domain.STAGES)}")
    args = argparse.Namespace(
        reason=_opt_str(body, "reason") or "reprocess (api)",
        backend=_opt_str(body, "backend"),
        chunk_size=_opt_int(body, "chunk_size"),
        chunk_overlap=_opt_int(body, "chunk_overlap"),
        model=_opt_str(body, "model") or (state.get("embedding_model") if stage == "embed" else None),
        all=False,
    )
    if args.backend not in (None, "auto", "local", "modal"):
        raise ApiError(400, "invalid_parameter", "backend must be auto, local or modal")
    if stage == "embed" and not args.model:
        raise ApiError(400, "invalid_parameter", "stage embed needs a model (no earlier embedding to repeat)")
    over_budget_ok = body.get("over_budget") is True
    try:
        estimate = await quote(rt.pool, stage, [doc], args)
    except EmbedderUnavailable as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from exc
    budget = await month_to_date(rt.pool)
    if estimate["usd"] > 0 and budget["spent_usd"] + estimate["usd"] > budget["budget_usd"] and not over_budget_ok:
        raise ApiError(
            409,
            "over_budget",
            f"${budget['spent_usd']:.2f} spent + ${estimate['usd']:.2f} quoted would cross the "
            f"${budget['budget_usd']:.2f} monthly budget; send over_budget: true to proceed",
        )
    await request_stage(rt.store, stage, [doc], args, actor="api")
    return json_response({"document_id": doc, "stage": stage, "requested": True, "quote": estimate}, status=202)


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise ApiError(400, "invalid_parameter", f"{key} must be a string")
    return value


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100_000:
        raise ApiError(400, "invalid_parameter", f"{key} must be a whole number between 1 and 100000")
    return value


@writes
async def delete_document(request: Request) -> Response:
    from app.commands.delete import delete_documents

    rt = runtime(request)
    doc = document_id(request)
    await _stream_events(rt, doc)
    body = await json_body(request)
    reason = _opt_str(body, "reason") or "deleted through the api"
    deleted = await delete_documents(rt.store, [doc], reason, actor="api")
    return json_response({"document_id": doc, "deleted": bool(deleted), "already_deleted": not deleted})


routes = [
    Route("/documents", upload, methods=["POST"]),
    Route("/documents", list_documents, methods=["GET"]),
    Route("/documents/{document_id}", get_document, methods=["GET"]),
    Route("/documents/{document_id}", delete_document, methods=["DELETE"]),
    Route("/documents/{document_id}/events", document_events, methods=["GET"]),
    Route("/documents/{document_id}/markdown", document_markdown, methods=["GET"]),
    Route("/documents/{document_id}/chunks", document_chunks, methods=["GET"]),
    Route("/documents/{document_id}/reprocess", reprocess, methods=["POST"]),
]
