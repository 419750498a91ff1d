"""The event store: event types, appends, reads, subscriptions and the blob store."""

from events.blobs import BlobRef, BlobStore, PgBlobStore
from events.errors import (
    AppendOnlyViolation,
    BlobNotFound,
    ChronosError,
    EventStoreError,
    IdempotencyConflict,
    MigrationError,
    WrongExpectedVersion,
)
from events.store import ANY, NO_STREAM, EventStore
from events.subscription import Subscription
from events.types import AppendResult, Cursor, NewEvent, RecordedEvent

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendOnlyViolation",
    "AppendResult",
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "ChronosError",
    "Cursor",
    "EventStore",
    "EventStoreError",
    "IdempotencyConflict",
    "MigrationError",
    "NewEvent",
    "PgBlobStore",
    "RecordedEvent",
    "Subscription",
    "WrongExpectedVersion",
]
