"""One exception root for the event store; driver errors are translated at one boundary."""

from __future__ import annotations


class ChronosError(Exception):
    """Chronos Ingest failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class EventStoreError(ChronosError):
    """The event store failed."""


class WrongExpectedVersion(EventStoreError):
    """The stream is not at the expected version: another writer appended first. Nothing was written."""


class IdempotencyConflict(EventStoreError):
    """Some of the event ids in this batch are already stored and some are not (or in another stream)."""


class AppendOnlyViolation(EventStoreError):
    """The events table is append-only."""


class BlobNotFound(ChronosError):
    """No blob with that sha256 is stored."""


class MigrationError(ChronosError):
    """A database migration could not be applied."""
