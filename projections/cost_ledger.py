"""The ``cost_ledger`` projection: one row per ``CostIncurred``, keyed by the event's position
(ON CONFLICT DO NOTHING: applying an event twice changes nothing)."""

from __future__ import annotations

from typing import Any

from app import domain
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector, as_uuid


def ledger_row(e: RecordedEvent) -> dict[str, Any]:
    d = e.data
    doc = as_uuid(d.get("document_id"))
    caused = as_uuid(d.get("caused_by"))
    return {
        "position": e.position,
        "event_id": str(e.event_id),
        "document_id": str(doc) if doc else None,
        "stage": str(d.get("stage") or "unknown"),
        "provider": str(d.get("provider") or "unknown"),
        "resource": str(d.get("resource") or "unknown"),
        "quantity": float(d.get("quantity") or 0),
        "unit_price_usd": float(d.get("unit_price_usd") or 0),
        "amount_usd": str(d.get("amount_usd") or 0),
        "caused_by": str(caused) if caused else None,
        "details": d.get("details"),
        "recorded_at": e.recorded_at.isoformat(),
    }


class CostLedgerProjector(Projector):
    name = "cost_ledger"
    tables = ("cost_ledger",)

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        rows = [ledger_row(e) for e in events if e.type == domain.COST_INCURRED]
        if rows:
            await conn.execute(query("projections", "cost_ledger_insert"), rows)
