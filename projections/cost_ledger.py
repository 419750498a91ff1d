"""The ``cost_ledger`` projection: one row per ``CostIncurred``, keyed by the event's position
(ON CONFLICT DO NOTHING: applying an event twice changes nothing)."""

from __future__ import annotations

from typing import Any

from app.catalogue.codec import decode_as
from app.catalogue.events import CostIncurred
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector, as_uuid


def ledger_row(e: RecordedEvent) -> dict[str, Any]:
    cost = decode_as(e, CostIncurred)
    doc = as_uuid(cost.document_id)
    caused = as_uuid(cost.caused_by)
    return {
        "position": e.position,
        "event_id": str(e.event_id),
        "document_id": str(doc) if doc else None,
        "stage": cost.stage,
        "provider": cost.provider,
        "resource": cost.resource,
        "quantity": cost.quantity,
        "unit_price_usd": cost.unit_price_usd,
        "amount_usd": str(cost.amount_usd),
        "caused_by": str(caused) if caused else None,
        "details": cost.details,
        "recorded_at": e.recorded_at.isoformat(),
    }


class CostLedgerProjector(Projector):
    name = "cost_ledger"
    tables = ("cost_ledger",)

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        rows = [ledger_row(e) for e in events if e.type == CostIncurred.TYPE]
        if rows:
            await conn.execute(query("projections", "cost_ledger_insert"), rows)
