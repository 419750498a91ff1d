"""The one boundary between stored payloads and event classes.

``decode(recorded)`` upcasts a payload written by an older ``schema_version`` step by step to the
current ``VERSION`` of its class, then validates it into the class; ``new_event(event, …)`` turns a
class back into what the store appends. Events of types this catalogue does not know (foreign
writers, a newer version of Chronos) decode to ``UnknownEvent`` and are ignored by every reader.
A payload of a known type that does not validate raises ``InvalidEvent``: a projection stops at it
(loudly, ``chronos check`` shows the projection behind and why) rather than skip it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from app.catalogue.events import BY_TYPE, Event
from events.errors import ChronosError
from events.types import NewEvent, RecordedEvent

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]
E = TypeVar("E", bound=Event)

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type, version) -> function turning a payload of that version into one of version + 1."""


class InvalidEvent(ChronosError):
    """A stored event's payload does not match its type in the catalogue."""


@dataclass(frozen=True)
class UnknownEvent:
    """An event type this catalogue does not describe."""

    type: str
    data: Mapping[str, Any]


def upcaster(type_: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns ``type_`` payloads of ``from_version`` into the next version."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_, from_version)] = fn
        return fn

    return register


@upcaster("DocumentChunked", 1)
def _chunked_v1(payload: Payload) -> Payload:
    """v1 kept each chunk's text and heading path inline; v2 names a content blob instead. A v1
    payload is a v2 one without a content blob (readers then take the inline fields)."""
    return {**payload, "content": None}


def upcast(type_: str, version: int, data: Mapping[str, Any]) -> Payload:
    """The payload in the current version of its class."""
    cls = BY_TYPE[type_]
    payload = dict(data)
    while version < cls.VERSION:
        step = UPCASTERS.get((type_, version))
        if step is None:
            raise InvalidEvent(f"no upcaster from {type_} v{version} to v{version + 1}")
        payload = step(payload)
        version += 1
    if version > cls.VERSION:
        raise InvalidEvent(
            f"{type_} v{version} was written by a newer Chronos (this one reads up to v{cls.VERSION}); upgrade"
        )
    return payload


def decode_payload(type_: str, version: int, data: Mapping[str, Any]) -> Event | UnknownEvent:
    cls = BY_TYPE.get(type_)
    if cls is None:
        return UnknownEvent(type_, data)
    try:
        return msgspec.convert(upcast(type_, version, data), cls, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"{type_} v{version} payload does not validate: {exc}") from exc


def decode(recorded: RecordedEvent) -> Event | UnknownEvent:
    """The typed event of a stored one."""
    try:
        return decode_payload(recorded.type, recorded.schema_version, recorded.data)
    except InvalidEvent as exc:
        raise InvalidEvent(f"event {recorded.event_id} at position {recorded.position}: {exc}") from None


def decode_as(recorded: RecordedEvent, cls: type[E]) -> E:
    """The typed event of a stored one known to be of ``cls``."""
    event = decode(recorded)
    if not isinstance(event, cls):
        raise InvalidEvent(f"event {recorded.event_id} is a {recorded.type}, not a {cls.TYPE}")
    return event


def payload(event: Event) -> Payload:
    """The JSON object stored for ``event``."""
    out: Payload = msgspec.to_builtins(event)
    return out


def new_event(event: Event, metadata: Mapping[str, Any], event_id: uuid.UUID | None = None) -> NewEvent:
    """What the store appends for ``event`` (``event_id``: deterministic for idempotent retries)."""
    if event_id is None:
        return NewEvent(event.TYPE, payload(event), dict(metadata), schema_version=event.VERSION)
    return NewEvent(event.TYPE, payload(event), dict(metadata), event_id=event_id, schema_version=event.VERSION)
