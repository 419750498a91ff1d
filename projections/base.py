"""What every projector has in common: a name, the tables it owns, and ``apply``.

A projector reads only its own tables (plus the immutable log and blob store), so what it holds is
always consistent with its own checkpoint, whatever the other projectors have reached.
Idempotence: per-document projectors remember the last stream version they applied
(``stream_version`` columns) and skip events at or below it; the ledger-like projectors key rows by
the event itself (position) and insert with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from app.catalogue.ids import document_id_from_stream, stream_for
from events.types import RecordedEvent

SUBSCRIPTION_PREFIX = "projection:"

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection as handed to subscription handlers (plain or pooled)."""


class Projector(ABC):
    """One projection: ``apply`` a batch of events on the checkpoint's connection and transaction."""

    name: str
    tables: tuple[str, ...]
    """Tables the projector owns and writes, in the order replay builds and swaps them."""
    per_document: bool = True
    """Its rows belong to documents (``chronos replay --document`` rebuilds them one document at a time)."""

    @property
    def subscription(self) -> str:
        return SUBSCRIPTION_PREFIX + self.name

    @abstractmethod
    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        """Write the effect of ``events`` (in delivery order) through ``conn``."""

    async def finish_bulk_load(self, conn: Conn) -> None:  # noqa: B027 (optional hook)
        """Called by replay after the shadow tables are loaded (e.g. build deferred indexes), on a
        connection outside a transaction whose session ``search_path`` names the shadow tables."""


def document_id_of(event: RecordedEvent) -> str | None:
    """The document an event is about: its stream's document, else ``data.document_id``."""
    found = document_id_from_stream(event.stream_id)
    if found is not None:
        return found
    value = event.data.get("document_id")
    return str(value) if value else None


def in_own_stream(event: RecordedEvent, document_id: str) -> bool:
    return event.stream_id == stream_for(document_id)


def as_uuid(value: Any) -> uuid.UUID | None:
    """A UUID from an event field; None for missing or malformed values (never raises)."""
    if value is None or value == "":
        return None
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def unique_ids(events: Iterable[RecordedEvent]) -> list[str]:
    seen: dict[str, None] = {}
    for e in events:
        doc = document_id_of(e)
        if doc is not None and as_uuid(doc) is not None:
            seen[doc] = None
    return list(seen)
