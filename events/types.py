"""Event records: what is appended and what is read back."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

JSON = dict[str, Any]

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

DbConn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection as handed out by asyncpg: direct, or a pool's proxy. Accept this in signatures."""


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then random bits.

    Event ids are indexed (unique); ids that grow with time land on the right-most index page
    instead of a random one, which keeps appends cheap as the log grows.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``event_id`` makes retries idempotent: reuse it when retrying."""

    type: str
    data: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    event_id: uuid.UUID = field(default_factory=uuid7)
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored in the log."""

    position: int
    tx_id: int
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    data: JSON
    metadata: JSON
    recorded_at: datetime

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.tx_id, self.position)


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A subscriber's place in the log: (writing transaction id, position), compared in that order."""

    tx_id: int = 0
    position: int = 0

    def __str__(self) -> str:
        return f"{self.tx_id}-{self.position}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Parse ``TX-POSITION`` (as printed by ``str``); a bare position means tx 0."""
        tx, sep, pos = text.strip().partition("-")
        if not sep:
            return cls(0, int(tx))
        return cls(int(tx), int(pos))


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Positions (one per appended event, in order) and the stream's version afterwards."""

    positions: list[int]
    stream_version: int
    duplicate: bool = False
    """True when every event id was already stored: an idempotent retry that wrote nothing."""

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0
