"""Error kinds of the application, under the one root ``events.errors.ChronosError``.

Exit codes follow sysexits(3) where one fits: 2 for a request that cannot be done as asked (bad
input, a budget stop), 3 for something that does not exist, 4 for a conflict with the current state,
69 for an unavailable service (database, Modal, OpenAI), 70 for an internal error.
"""

from __future__ import annotations

from events.errors import ChronosError

__all__ = ["ChronosError", "Conflict", "InternalError", "InvalidRequest", "NotFound", "OverBudget", "Unavailable"]


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


class OverBudget(Conflict):
    """The quoted spend would cross the monthly budget."""

    code = "over_budget"
    exit_code = 2


class Unavailable(ChronosError):
    """A service Chronos depends on is unavailable."""

    code = "unavailable"
    http_status = 503
    exit_code = 69


class InternalError(ChronosError):
    """Chronos hit a bug."""

    code = "internal"
    exit_code = 70
