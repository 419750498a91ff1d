"""The one exception root of Chronos Ingest; driver errors are translated at one boundary.

Every error a user can meet is a ``ChronosError``: its message says what failed and what to do, and
its class says how the CLI exits (``exit_code``) and what the HTTP API answers (``http_status`` and a
stable ``code``). The CLI and the API each map them in one place (app/cli.py, app/api/errors.py).
"""

from __future__ import annotations

from typing import ClassVar


class ChronosError(Exception):
    """Chronos Ingest failed."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class EventStoreError(ChronosError):
    """The event store failed."""

    code = "event_store"


class WrongExpectedVersion(EventStoreError):
    """The stream is not at the expected version: another writer appended first. Nothing was written."""

    code = "conflict"
    http_status = 409


class IdempotencyConflict(EventStoreError):
    """Some of the event ids in this batch are already stored and some are not (or in another stream)."""

    code = "idempotency_conflict"
    http_status = 409


class AppendOnlyViolation(EventStoreError):
    """The events table is append-only."""


class BlobNotFound(ChronosError):
    """No blob with that sha256 is stored."""

    code = "blob_not_found"
    http_status = 410


class MigrationError(ChronosError):
    """A database migration could not be applied."""

    code = "migration"


# --- kinds every layer may raise (app/errors.py re-exports them) ------------------------------
# Exit codes follow sysexits(3) where one fits: 2 for a request that cannot be done as asked, 3 for
# something that does not exist, 4 for a conflict with the current state, 69 for an unavailable
# service (database, Modal, OpenAI), 70 for an internal error.


class InvalidRequest(ChronosError):
    """The request cannot be done as asked."""

    code = "invalid_parameter"
    http_status = 400
    exit_code = 2


class NotFound(ChronosError):
    """No such thing."""

    code = "not_found"
    http_status = 404
    exit_code = 3


class Conflict(ChronosError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409
    exit_code = 4


class Unavailable(ChronosError):
    """A service Chronos depends on is unavailable."""

    code = "unavailable"
    http_status = 503
    exit_code = 69
