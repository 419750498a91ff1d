"""``/documents``: upload, list, inspect, reprocess, delete."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.api import bodies
from app.api.auth import actor_of, admin, principal_of_request, reads, require, writes
from app.api.bodies import typed
from app.api.common import document_id, event_json, int_param, json_body, runtime
from app.api.errors import ApiError
from app.api.responses import json_response
from app.api.uploads import open_upload
from app.catalogue.collections import parse_metadata
from app.catalogue.content import full_chunks
from app.catalogue.events import STAGES
from app.catalogue.ids import chunk_id_for, stream_for
from app.catalogue.state import Status
from app.pipeline.stream import DocumentStream
from app.services import reprocess as reprocess_service
from app.services import visibility
from app.services.delete import delete_document as delete_service
from app.services.documents import DocumentDeleted, document_view, read_document
from app.services.documents import history as history_service
from app.services.metadata import update_metadata
from app.services.selection import Selection
from app.services.upload import IntakeResult, ingest_stream
from events.errors import BlobNotFound
from events.sqlfiles import query

STATUSES = tuple(s.value for s in Status)
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
        "revision": result.revision,
        "key": result.key,
        "collection": result.collection,
        "metadata_updated": result.metadata_updated,
        "links": links(result.document_id),
    }


def links(doc: str) -> dict[str, str]:
    base = f"/documents/{doc}"
    return {
        "self": base, "events": f"{base}/events", "markdown": f"{base}/markdown", "chunks": f"{base}/chunks",
        "revisions": f"{base}/revisions",
    }  # fmt: skip


def intake_response(result: IntakeResult) -> Response:
    return json_response(
        typed(bodies.Intake, intake_json(result)),
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
    external = external_id(request)
    body = await open_upload(request)
    # A token of some collections uploads into one of them (404 for another, as if it did not exist).
    collection = visibility.upload_collection(
        principal_of_request(request), _one_of(request, body.fields, "collection")
    )
    raw_metadata = _one_of(request, body.fields, "metadata")
    metadata = parse_metadata(raw_metadata) if raw_metadata is not None else None
    result = await ingest_stream(
        rt.store,
        rt.blobs,
        body.chunks,
        filename=body.filename,
        source="api",
        actor=actor_of(request),
        declared_media_type=body.declared_media_type,
        max_bytes=rt.settings.max_upload_bytes,
        reject_unsupported=True,
        idempotency_key=key,
        key=f"api:{external}" if external else None,
        collection=collection,
        metadata=metadata,
    )
    return intake_response(result)


def _one_of(request: Request, fields: dict[str, str], name: str) -> str | None:
    """A parameter given as a query parameter or a form field (both: they must agree)."""
    in_query = request.query_params.get(name)
    in_form = fields.get(name)
    if in_query is not None and in_form is not None and in_query != in_form:
        raise ApiError(400, "invalid_parameter", f"{name} is given both in the query and as a form field, differently")
    return in_query if in_query is not None else in_form


def external_id(request: Request) -> str | None:
    """``external_id`` (query) or ``X-External-Id`` (header): the caller's own id of the document; new
    content under it is a new revision of the same document (docs/revisions.md)."""
    raw = request.query_params.get("external_id") or request.headers.get("x-external-id")
    if raw is None:
        return None
    value = raw.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise ApiError(400, "invalid_parameter", f"external_id must be 1..{MAX_IDEMPOTENCY_KEY} printable characters")
    return value


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
    collections = visibility.narrowed(principal_of_request(request), request.query_params.get("collection") or None)
    rows = await rt.pool.fetch(query("api", "documents_page"), statuses, after[0], after[1], limit + 1, collections)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        typed(
            bodies.DocumentList,
            {
                "documents": [document_row_json(r) for r in rows],
                "next_cursor": _encode_cursor(rows[-1]) if more else None,
            },
        )
    )


@reads
async def get_document(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    body = await document_view(rt.pool, rt.store, doc)
    body["links"] = links(doc)
    return json_response(typed(bodies.DocumentDetail, body))


@reads
async def document_events(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    after = int_param(request, "after_version", 0, 0, 2**31 - 1)
    limit = int_param(request, "limit", 1000, 1, 10_000)
    await read_document(rt.store, doc)
    events = await rt.store.read_stream(stream_for(doc), after, limit)
    data = request.query_params.get("data", "full")
    if data not in ("full", "summary", "none"):
        raise ApiError(400, "invalid_parameter", "data must be full, summary or none")
    shown = [event_json(e, data=data) for e in events]
    return json_response(typed(bodies.DocumentEvents, {"document_id": doc, "events": shown}))


@reads
async def document_revisions(request: Request) -> Response:
    """Every revision of the document: source, hash, stages, failure, cost, and which one search serves."""
    rt = runtime(request)
    doc = document_id(request)
    body = await history_service(rt.store, doc)
    body["links"] = links(doc)
    return json_response(typed(bodies.DocumentRevisions, body))


@reads
async def document_markdown(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    state, events = await read_document(rt.store, doc)
    if state.deleted:
        raise ApiError(410, "deleted", f"document {doc} was deleted")
    conversion = DocumentStream.of(events).current_conversion
    if conversion is None:
        raise ApiError(409, "not_ready", f"document {doc} has not been converted yet")
    ref = conversion.markdown
    if await rt.blobs.stat(ref.sha256) is None:
        raise ApiError(410, "deleted", f"the Markdown of document {doc} is no longer stored")
    return StreamingResponse(
        rt.blobs.open(ref.sha256),
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Length": str(ref.size), "X-Conversion-Id": conversion.conversion_id},
    )


@reads
async def document_chunks(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    after = int_param(request, "after", -1, -1, 2**31 - 1)
    limit = int_param(request, "limit", 100, 1, 1000)
    state, events = await read_document(rt.store, doc)
    if state.deleted:
        raise ApiError(410, "deleted", f"document {doc} was deleted")
    # The document's latest chunk set, from the log: shown as soon as it is chunked, whether search
    # serves it yet (``serving``) or still answers from the set before it.
    chunked = DocumentStream.of(events).current_chunk_set
    if chunked is None:
        return json_response(typed(bodies.ChunkList, {"document_id": doc, "chunk_set_id": None, "serving": False,
                                                      "chunks": [], "next_after": None}))  # fmt: skip
    try:
        full = await full_chunks(rt.blobs, chunked)
    except BlobNotFound:
        raise ApiError(410, "deleted", f"the chunks of document {doc} are no longer stored") from None
    page = [c for c in sorted(full, key=lambda c: c.ordinal) if c.ordinal > after][: limit + 1]
    more = len(page) > limit
    chunks = [
        {
            "chunk_id": str(chunk_id_for(chunked.chunk_set_id, c.ordinal)),
            "chunk_set_id": chunked.chunk_set_id,
            "ordinal": c.ordinal,
            "text": c.text,
            "pages": list(c.pages),
            "heading_path": list(c.heading_path or ()),
            "char_start": c.char_start,
            "char_end": c.char_end,
            "token_count": c.token_count,
        }
        for c in page[:limit]
    ]
    return json_response(
        typed(
            bodies.ChunkList,
            {
                "document_id": doc,
                "chunk_set_id": chunked.chunk_set_id,
                "serving": chunked.chunk_set_id == state.serving_chunk_set_id,
                "chunks": chunks,
                "next_after": chunks[-1]["ordinal"] if more and chunks else None,
            },
        )
    )


@writes
async def reprocess(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    body = await json_body(request)
    state, _events = await read_document(rt.store, doc)
    if state.deleted:
        raise DocumentDeleted(f"document {doc} was deleted; upload it again instead")
    stage = body.get("stage") or state.failed_stage or "convert"
    if stage not in STAGES:
        raise ApiError(400, "invalid_parameter", f"stage must be one of {', '.join(STAGES)}")
    wanted = reprocess_service.StageRequest(
        stage=stage,
        reason=_opt_str(body, "reason") or "reprocess (api)",
        backend=_opt_str(body, "backend"),
        chunk_size=_opt_int(body, "chunk_size"),
        chunk_overlap=_opt_int(body, "chunk_overlap"),
        context_template=_opt_str(body, "context_template"),
        model=_opt_str(body, "model") or (state.embedding_model if stage == "embed" else None),
    )
    if stage == "embed" and not wanted.model:
        raise ApiError(400, "invalid_parameter", "stage embed needs a model (no earlier embedding to repeat)")
    plan = await reprocess_service.plan(rt.pool, rt.settings, Selection(document_ids=(doc,)), wanted)
    if plan.paid:
        await require(request, "admin")  # spending money needs admin; a free re-run only write
    await reprocess_service.execute(
        rt.pool, rt.store, rt.settings, plan, actor=actor_of(request), over_budget_ok=body.get("over_budget") is True
    )
    return json_response(
        typed(bodies.Reprocess, {"document_id": doc, "stage": stage, "requested": True, "quote": plan.quote.to_json()}),
        status=202,
    )


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
async def patch_metadata(request: Request) -> Response:
    """The body is metadata (a JSON object): merged into the document's (``?mode=merge``, the default: its
    top-level keys replace the document's, a null removes one) or the whole of it (``?mode=replace``)."""
    rt = runtime(request)
    doc = document_id(request)
    raw = await request.body()
    metadata = parse_metadata(raw.decode("utf-8", "replace") if raw.strip() else "", what="the body")
    change = await update_metadata(
        rt.store, doc, metadata, request.query_params.get("mode", "merge"), actor=actor_of(request)
    )
    return json_response(typed(bodies.MetadataChange, change.to_json()))


@admin
async def delete_document(request: Request) -> Response:
    rt = runtime(request)
    doc = document_id(request)
    body = await json_body(request)
    reason = _opt_str(body, "reason") or "deleted through the api"
    deleted = await delete_service(rt.store, doc, reason, actor=actor_of(request))
    return json_response(
        typed(bodies.Deleted, {"document_id": doc, "deleted": deleted, "already_deleted": not deleted})
    )


routes = [
    Route("/documents", upload, methods=["POST"]),
    Route("/documents", list_documents, methods=["GET"]),
    Route("/documents/{document_id}", get_document, methods=["GET"]),
    Route("/documents/{document_id}", delete_document, methods=["DELETE"]),
    Route("/documents/{document_id}/events", document_events, methods=["GET"]),
    Route("/documents/{document_id}/revisions", document_revisions, methods=["GET"]),
    Route("/documents/{document_id}/markdown", document_markdown, methods=["GET"]),
    Route("/documents/{document_id}/chunks", document_chunks, methods=["GET"]),
    Route("/documents/{document_id}/reprocess", reprocess, methods=["POST"]),
    Route("/documents/{document_id}/metadata", patch_metadata, methods=["PATCH"]),
]
