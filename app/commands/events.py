"""``chronos events``: look at (and append to) the event log by hand."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from app.catalogue.codec import InvalidEvent, decode_payload
from app.catalogue.events import BY_TYPE
from app.errors import InvalidRequest
from app.runtime import open_runtime
from events.types import NewEvent, RecordedEvent


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="list or append events")
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="events in position order")
    ls.add_argument("--after", type=int, default=0, help="only events after this position")
    ls.add_argument("--stream", help="only this stream")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=list_events)
    ap = actions.add_parser("append", help="append one event to a stream")
    ap.add_argument("stream")
    ap.add_argument("type")
    ap.add_argument("data", help="JSON object")
    ap.add_argument("--expected-version", type=int, default=None)
    ap.set_defaults(func=append_event)


def _as_json(e: RecordedEvent) -> dict[str, Any]:
    return {
        "position": e.position,
        "event_id": str(e.event_id),
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "type": e.type,
        "schema_version": e.schema_version,
        "data": e.data,
        "metadata": e.metadata,
        "recorded_at": e.recorded_at.isoformat(),
    }


async def list_events(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        if args.stream:
            events = await rt.store.read_stream_after_position(args.stream, args.after, args.limit)
        else:
            events = await rt.store.read_all(args.after, args.limit)
    if args.json:
        print(orjson.dumps([_as_json(e) for e in events]).decode())
        return 0
    for e in events:
        data = orjson.dumps(e.data).decode()
        if len(data) > 80:
            data = data[:77] + "..."
        print(f"{e.position:>8}  {e.recorded_at:%Y-%m-%d %H:%M:%S}  {e.stream_id}@{e.stream_version}  {e.type}  {data}")
    return 0


async def append_event(args: argparse.Namespace) -> int:
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"event data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("event data must be a JSON object")
    if args.type in BY_TYPE:
        # A known type must match the catalogue: a payload no reader can take would stop the projections.
        try:
            decode_payload(args.type, BY_TYPE[args.type].VERSION, data)
        except InvalidEvent as exc:
            raise InvalidRequest(str(exc)) from None
    async with open_runtime() as rt:
        result = await rt.store.append(
            args.stream, [NewEvent(args.type, data, {"actor": "cli"})], args.expected_version
        )
    print(f"appended at position {result.last_position}; {args.stream} is now at version {result.stream_version}")
    return 0
