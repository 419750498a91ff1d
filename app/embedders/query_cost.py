"""Search queries are embedded too, and with OpenAI that is spend: each query's cost goes in the ledger.

A paid query embedding appends one ``CostIncurred`` (stage ``search``, ``document_id`` null,
``caused_by`` the query id) in a stream of its own, ``search-<query id>``: concurrent searches never
contend for a stream version, and the budget (v_budget_month) counts them like any other line.

A local query embedding appends nothing. It is a few milliseconds of CPU in the API process (about
$0.0000001 at the local CPU price, at the ledger's resolution of $0.00000001), no provider bills it,
and a line per query would turn every search into a write and grow the log by one event per
question. Documents' local embeddings are still costed (they are the bulk of the CPU).
"""

from __future__ import annotations

import logging
import uuid

from app import domain
from app.embedders.base import EmbedResult
from events.store import EventStore
from events.types import NewEvent

log = logging.getLogger(__name__)
QUERY_NAMESPACE = uuid.UUID("3c1f0a8e-6b52-4d7e-9f14-2a8d5e7c9b31")


def search_stream(query_id: uuid.UUID) -> str:
    return f"search-{query_id}"


async def record_query_cost(
    store: EventStore, provider: str, result: EmbedResult, query_id: uuid.UUID, actor: str = "search"
) -> int:
    """Append the cost lines of one query's embedding (none for a local model); returns how many."""
    if provider == "local":
        return 0
    events = []
    for i, line in enumerate(result.cost):
        if line.quantity <= 0:
            continue
        data = line.event_data(None, "search", str(query_id))
        event_id = uuid.uuid5(QUERY_NAMESPACE, f"{query_id}:{i}")
        events.append(NewEvent(domain.COST_INCURRED, dict(data), {"actor": actor, "correlation_id": str(query_id)},
                               event_id=event_id))  # fmt: skip
    if events:
        await store.append(search_stream(query_id), events)
        log.info("Query embedding costed", extra={"action": "search_cost", "query_id": str(query_id),
                                                  "tokens": result.tokens, "lines": len(events)})  # fmt: skip
    return len(events)
