"""The ``collections`` projection: one row per collection (CollectionCreated, CollectionBudgetSet of
streams ``collection-<name>``). ``default`` has no event: the migration inserts its row and replay
inserts it again (``finish_bulk_load``), so a rebuilt table equals the live one."""

from __future__ import annotations

from app.catalogue import events as ev
from app.catalogue.codec import decode
from app.catalogue.ids import COLLECTION_STREAM_PREFIX
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector

HANDLED = frozenset({ev.CollectionCreated.TYPE, ev.CollectionBudgetSet.TYPE})


class CollectionsProjector(Projector):
    name = "collections"
    tables = ("collections",)
    per_document = False

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        for recorded in events:
            if recorded.type not in HANDLED or not recorded.stream_id.startswith(COLLECTION_STREAM_PREFIX):
                continue
            event = decode(recorded)
            if isinstance(event, ev.CollectionCreated):
                await conn.execute(
                    query("collections", "created"),
                    event.name, event.description, event.monthly_budget_usd, recorded.recorded_at, recorded.position,
                )  # fmt: skip
            elif isinstance(event, ev.CollectionBudgetSet):
                await conn.execute(
                    query("collections", "budget_set"), event.name, event.monthly_budget_usd, recorded.position
                )

    async def finish_bulk_load(self, conn: Conn) -> None:
        await conn.execute(query("collections", "ensure_default"))
