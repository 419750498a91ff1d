"""The ``documents`` projection: one row per document, the persisted ``DocumentState``.

The rules live in ``app.catalogue.state`` (the one reducer); this projector only loads rows, folds
the batch's events into them and writes them back. Idempotence: a row remembers the last stream
version applied (``stream_version``); events of the document's own stream at or below it are skipped.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from app.catalogue import events as ev
from app.catalogue.codec import UnknownEvent, decode
from app.catalogue.ids import stream_for
from app.catalogue.state import DocumentState, evolve
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector, document_id_of, unique_ids

HANDLED = frozenset(cls.TYPE for cls in ev.ALL)


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


class DocumentsProjector(Projector):
    name = "documents"
    tables = ("documents",)

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in HANDLED]
        ids = unique_ids(relevant)
        if not ids:
            return
        rows = await conn.fetch(query("projections", "documents_get"), ids)
        states: dict[str, DocumentState | None] = {str(r["document_id"]): DocumentState.from_row(dict(r)) for r in rows}
        changed: set[str] = set()
        for recorded in relevant:
            doc = document_id_of(recorded)
            if doc is None or doc not in ids:
                continue
            state = states.get(doc)
            own = recorded.stream_id == stream_for(doc)
            if own and state is not None and recorded.stream_version <= state.stream_version:
                continue  # applied already
            event = decode(recorded)
            if isinstance(event, UnknownEvent):
                continue
            new = evolve(state, event, recorded)
            if new is None:
                continue
            states[doc] = new
            changed.add(doc)
        if not changed:
            return
        payload = [{k: _jsonable(v) for k, v in s.row().items()} for d, s in states.items() if d in changed and s]
        await conn.execute(query("projections", "documents_delete"), list(changed))
        await conn.execute(query("projections", "documents_insert"), payload)
