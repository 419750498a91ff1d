"""Search queries are embedded too, and with OpenAI that is spend: each query's cost goes in the ledger.

A paid query embedding appends one ``CostIncurred`` (stage ``search``, ``document_id`` null,
``caused_by`` the query id) in a stream of its own, ``search-<query id>`` (app.catalogue.ids): concurrent
searches never contend for a stream version, and the budget (v_budget_month) counts them like any other
line.

A local query embedding appends nothing. It is a few milliseconds of CPU in the API process (about
$0.0000001 at the local CPU price, at the ledger's resolution of $0.00000001), no provider bills it,
and a line per query would turn every search into a write and grow the log by one event per
question. Documents' local embeddings are still costed (they are the bulk of the CPU).
"""

from __future__ import annotations

import logging
import uuid

from app.catalogue.codec import new_event
from app.catalogue.ids import query_cost_event_id, search_stream
from app.costs import summed
from app.embedders.base import EmbedResult
from events.store import EventStore

log = logging.getLogger(__name__)


async def record_query_cost(
    store: EventStore, provider: str, result: EmbedResult, query_id: uuid.UUID, actor: str = "search"
) -> int:
    """Append the cost lines of one query's embedding (none for a local model); returns how many."""
    if provider == "local":
        return 0
    meta = {"actor": actor, "correlation_id": str(query_id)}
    events = [
        new_event(line.event(None, "search", str(query_id)), meta, query_cost_event_id(query_id, i))
        for i, line in enumerate(summed(result.cost))
        if line.quantity > 0
    ]
    if events:
        await store.append(search_stream(query_id), events)
        log.info("Query embedding costed", extra={"action": "search_cost", "query_id": str(query_id),
                                                  "tokens": result.tokens, "lines": len(events)})  # fmt: skip
    return len(events)
