"""``/events`` (the global feed, paged by cursor) and ``/events/stream`` (SSE live tail).

Both read in delivery order, ``(tx_id, position)``: gap-free even when transactions commit out of
position order. A cursor is ``TX-POSITION`` (as in each event's ``cursor`` field and the SSE id);
a bare ``POSITION`` is accepted too and means "after the event at that position". A token limited to
some collections sees only the streams of their documents (and of those collections):
app/services/visibility.py.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.api import bodies
from app.api.auth import principal_of_request, reads
from app.api.bodies import typed
from app.api.common import event_json, int_param, runtime
from app.api.errors import ApiError
from app.api.responses import json_response
from app.api.sse import event_stream
from app.runtime import Runtime
from app.services.visibility import visible_events
from events.sqlfiles import query
from events.types import Cursor

MAX_CURSOR = 2**62


async def parse_cursor(rt: Runtime, raw: str, name: str) -> Cursor:
    text = raw.strip()
    if text == "now":
        return await now_cursor(rt)
    try:
        cursor = Cursor.parse(text)
    except ValueError:
        raise ApiError(
            400, "invalid_cursor", f"{name} must be a cursor TX-POSITION or a position, not {raw!r}"
        ) from None
    if cursor.tx_id < 0 or cursor.position < 0 or cursor.tx_id > MAX_CURSOR or cursor.position > MAX_CURSOR:
        raise ApiError(400, "invalid_cursor", f"{name} is out of range")
    if "-" in text or cursor.position == 0:
        return cursor
    row = await rt.pool.fetchrow(query("api", "cursor_at_position"), cursor.position)
    return Cursor(row["tx_id"], row["position"]) if row else Cursor(0, 0)


async def now_cursor(rt: Runtime) -> Cursor:
    """A cursor after every event already final: the stream then shows only what comes next."""
    xmin = int(await rt.pool.fetchval(query("api", "snapshot_cursor")))
    return Cursor(max(xmin - 1, 0), MAX_CURSOR)


def types_param(request: Request) -> frozenset[str] | None:
    raw = request.query_params.get("types")
    if not raw:
        return None
    return frozenset(t.strip() for t in raw.split(",") if t.strip())


def data_param(request: Request) -> str:
    data = request.query_params.get("data", "full")
    if data not in ("full", "summary", "none"):
        raise ApiError(400, "invalid_parameter", "data must be full, summary or none")
    return data


@reads
async def list_events(request: Request) -> Response:
    rt = runtime(request)
    limit = int_param(request, "limit", 100, 1, 1000)
    data = data_param(request)
    types = types_param(request)
    cursor = await parse_cursor(rt, request.query_params.get("after") or "0", "after")
    events = await rt.store.read_safe(cursor, limit)
    next_cursor = str(events[-1].cursor) if events else str(cursor)
    seen = await visible_events(rt.pool, principal_of_request(request), events)  # a collection token: its own
    shown = [event_json(e, data=data) for e in seen if types is None or e.type in types]
    head = await rt.store.head_position()
    return json_response(typed(bodies.EventList, {"events": shown, "next": next_cursor, "head": head}))


@reads
async def stream_events(request: Request) -> Response:
    rt = runtime(request)
    data = data_param(request)
    types = types_param(request)
    last_id = request.headers.get("last-event-id")
    if last_id:
        cursor = await parse_cursor(rt, last_id, "Last-Event-ID")
    elif request.query_params.get("after"):
        cursor = await parse_cursor(rt, request.query_params["after"], "after")
    else:
        cursor = await now_cursor(rt)
    state = request.app.state
    return StreamingResponse(
        event_stream(
            rt,
            state.hub,
            cursor,
            principal=principal_of_request(request),
            types=types,
            data=data,
            heartbeat_s=rt.settings.sse_heartbeat_s,
            poll_s=state.sse_poll_s,
            stopping=state.stopping,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/events", list_events, methods=["GET"]),
    Route("/events/stream", stream_events, methods=["GET"]),
]
