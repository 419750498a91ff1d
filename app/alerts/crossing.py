"""Seeing a threshold crossed: the month's spend from the log against the monthly budget, and one
``BudgetThresholdCrossed`` per month and threshold (why it is exactly once: app/alerts/__init__.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from app.catalogue.codec import new_event
from app.catalogue.events import BudgetThresholdCrossed, CostIncurred
from app.catalogue.ids import budget_alert_event_id, budget_stream
from app.config import Settings
from app.services.budget import budget_usd
from events.errors import WrongExpectedVersion
from events.sqlfiles import query
from events.store import EventStore
from events.types import DbConn, RecordedEvent

logger = logging.getLogger(__name__)

THRESHOLDS: tuple[int, ...] = (80, 100)
"""Percentages of the monthly budget that alert (the product plan: "$50/mo threshold")."""
NAME = "budget-alerts"
"""The subscription's name (its checkpoint row)."""
ACTOR = "budget-alerts"


def month_of(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m")


@dataclass(frozen=True)
class Crossing:
    month: str
    threshold_pct: int
    spent_usd: Decimal
    budget_usd: Decimal
    event_id: str
    appended: bool  # False: another checker (or an earlier check) had recorded it already


def alert_text(month: str, pct: int, spent: Decimal, budget: Decimal) -> str:
    if pct >= 100:
        head = f"Chronos Ingest is over its monthly budget for {month}"
    else:
        head = f"Chronos Ingest has spent {pct} % of its monthly budget for {month}"
    return (
        f"{head}: ${spent:.2f} of ${budget:.2f} month to date. "
        "See `chronos costs` or the dashboard for spend by stage and provider."
    )


async def month_spend(conn: asyncpg.Pool | DbConn, month: str) -> Decimal:
    value = await conn.fetchval(query("alerts", "month_spend"), month)
    return Decimal(value)


async def check_month(store: EventStore, settings: Settings, month: str) -> list[Crossing]:
    """Record every threshold ``month``'s spend has reached and that is not recorded yet (80 % first).
    Safe to run from any number of processes at once."""
    spent = await month_spend(store.pool, month)
    budget = await budget_usd(store.pool, settings)
    if budget <= 0:  # a zero budget means "no budget": every cent would be "over it"
        return []
    crossings: list[Crossing] = []
    for pct in THRESHOLDS:
        if spent * 100 < budget * pct:
            break
        event_id = budget_alert_event_id(month, pct)
        event = BudgetThresholdCrossed(
            month=month, threshold_pct=pct, spent_usd=float(spent), budget_usd=float(budget),
            message=alert_text(month, pct, spent, budget),
        )  # fmt: skip
        recorded = new_event(event, {"actor": ACTOR}, event_id)
        for attempt in range(5):
            try:
                result = await store.append(budget_stream(month), [recorded])
                break
            except WrongExpectedVersion:
                # Another checker appended a different event of this stream (the other threshold, a
                # delivery) at the same version: take the next one.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        crossings.append(Crossing(month, pct, spent, budget, str(event_id), appended=not result.duplicate))
        if not result.duplicate:
            logger.warning(
                "budget alert: %s %d %% of the monthly budget crossed ($%.2f of $%.2f)", month, pct, spent, budget,
                extra={"action": "budget_threshold_crossed", "month": month, "threshold_pct": pct,
                       "spent_usd": float(spent), "budget_usd": float(budget), "event_id": str(event_id)},
            )  # fmt: skip
    return crossings


class BudgetCheck:
    """The ``budget-alerts`` subscription's handler: after a batch holding costs of this or last
    month, check those months. ``on_alert`` is called when this process recorded a new crossing (the
    deliverer of the same process wakes at once instead of at its next poll)."""

    def __init__(self, store: EventStore, settings: Settings, on_alert: Callable[[], None] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.on_alert = on_alert

    async def handle(self, conn: DbConn, events: list[RecordedEvent]) -> None:
        months = {month_of(e.recorded_at) for e in events if e.type == CostIncurred.TYPE}
        if not months:
            return
        row = await conn.fetchrow(query("alerts", "current_months"))
        assert row is not None
        recent = months & {row["current"], row["previous"]}
        new = False
        for month in sorted(recent):
            new = any(c.appended for c in await check_month(self.store, self.settings, month)) or new
        if new and self.on_alert is not None:
            self.on_alert()
