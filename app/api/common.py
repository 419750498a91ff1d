"""Small helpers shared by the route modules: runtime access, parameters, event JSON."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request

from app.api.errors import ApiError
from app.catalogue import ids
from app.runtime import Runtime
from events.types import RecordedEvent


def runtime(request: Request) -> Runtime:
    rt: Runtime | None = getattr(request.app.state, "rt", None)
    if rt is None:
        raise ApiError(503, "unavailable", "the service is starting or stopping")
    return rt


def document_id(request: Request) -> str:
    raw = request.path_params["document_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(400, "invalid_document_id", f"{raw!r} is not a document id (a UUID)") from None


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {lo} and {hi}, not {value}")
    return value


async def json_body(request: Request, *, required: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "bad_request", "a JSON object body is required")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def event_json(e: RecordedEvent, *, data: str = "full") -> dict[str, Any]:
    """An event as the API shows it; ``data='summary'`` keeps only small fields (the dashboard)."""
    out: dict[str, Any] = {
        "position": e.position,
        "cursor": str(e.cursor),
        "event_id": str(e.event_id),
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "type": e.type,
        "schema_version": e.schema_version,
        "document_id": e.data.get("document_id") or ids.document_id_from_stream(e.stream_id),
        "recorded_at": e.recorded_at,
    }
    if data == "full":
        out["data"] = e.data
        out["metadata"] = e.metadata
    elif data == "summary":
        out["data"] = {k: v for k, v in e.data.items() if k in SUMMARY_KEYS and not isinstance(v, dict | list)}
    return out


SUMMARY_KEYS = frozenset(
    {
        "document_id",
        "filename",
        "media_type",
        "size",
        "source",
        "stage",
        "error_class",
        "message",
        "final",
        "attempt",
        "backend",
        "pipeline",
        "page_count",
        "model",
        "provider",
        "amount_usd",
        "chunk_count",
        "reason",
    }
)
