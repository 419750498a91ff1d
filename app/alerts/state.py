"""Where a month's alerts stand, folded from its ``budget-YYYY-MM`` stream: crossed, delivered,
failed. Read by ``chronos costs``, ``GET /costs`` (the dashboard), ``chronos check`` and the
deliverer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from app.catalogue.codec import decode_payload
from app.catalogue.events import BudgetAlertDelivered, BudgetAlertDeliveryFailed, BudgetThresholdCrossed
from app.catalogue.ids import budget_stream
from events.sqlfiles import query
from events.types import DbConn

Status = Literal["delivered", "failed", "pending"]


@dataclass
class AlertState:
    event_id: str
    crossed: BudgetThresholdCrossed
    crossed_at: dt.datetime
    delivered: BudgetAlertDelivered | None = None
    delivered_at: dt.datetime | None = None
    failures: list[tuple[dt.datetime, BudgetAlertDeliveryFailed]] = field(default_factory=list)

    @property
    def status(self) -> Status:
        if self.delivered is not None:
            return "delivered"
        return "failed" if self.failures else "pending"

    def to_json(self) -> dict[str, Any]:
        last = self.failures[-1][1] if self.failures else None
        return {
            "alert_id": self.event_id,
            "month": self.crossed.month,
            "threshold_pct": self.crossed.threshold_pct,
            "spent_usd": self.crossed.spent_usd,
            "budget_usd": self.crossed.budget_usd,
            "crossed_at": self.crossed_at.isoformat(),
            "message": self.crossed.message,
            "delivery": self.status,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "attempts": (self.delivered.attempts if self.delivered else 0) + sum(f.attempts for _, f in self.failures),
            "last_error": None if self.delivered or last is None else last.error,
        }


async def month_alerts(conn: asyncpg.Pool | DbConn, month: str) -> list[AlertState]:
    """``month``'s alerts ("YYYY-MM"), lowest threshold first."""
    alerts: dict[str, AlertState] = {}
    for row in await conn.fetch(query("alerts", "month_events"), budget_stream(month)):
        event = decode_payload(row["type"], row["schema_version"], row["data"])
        if isinstance(event, BudgetThresholdCrossed):
            alerts[str(row["event_id"])] = AlertState(str(row["event_id"]), event, row["recorded_at"])
        elif isinstance(event, BudgetAlertDelivered) and event.alert_event_id in alerts:
            alerts[event.alert_event_id].delivered = event
            alerts[event.alert_event_id].delivered_at = row["recorded_at"]
        elif isinstance(event, BudgetAlertDeliveryFailed) and event.alert_event_id in alerts:
            alerts[event.alert_event_id].failures.append((row["recorded_at"], event))
    return sorted(alerts.values(), key=lambda a: a.crossed.threshold_pct)


async def recent_alerts(conn: asyncpg.Pool | DbConn) -> list[AlertState]:
    """The alerts of this month and the one before, oldest month first."""
    row = await conn.fetchrow(query("alerts", "current_months"))
    assert row is not None
    return [*await month_alerts(conn, row["previous"]), *await month_alerts(conn, row["current"])]
