"""Error kinds of the application, under the one root ``events.errors.ChronosError``.

The generic kinds (``InvalidRequest``, ``NotFound``, ``Conflict``, ``Unavailable``) live in
``events/errors.py`` so that every layer can raise them; the ones only the application needs are here.
"""

from __future__ import annotations

from events.errors import ChronosError, Conflict, InvalidRequest, NotFound, Unavailable

__all__ = ["ChronosError", "Conflict", "InternalError", "InvalidRequest", "NotFound", "OverBudget", "Unavailable"]


class OverBudget(Conflict):
    """The quoted spend would cross the monthly budget."""

    code = "over_budget"
    exit_code = 2


class InternalError(ChronosError):
    """Chronos hit a bug."""

    code = "internal"
    exit_code = 70
