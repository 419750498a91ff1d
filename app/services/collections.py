"""Collections (docs/collections.md): create them, check that one exists, list them and count what they
hold. The log is the truth for existence (a stream ``collection-<name>`` holding a CollectionCreated;
``default`` always exists), so an upload right after ``chronos collections create`` never races the
projection; listings and stats read the projections.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.collections import DEFAULT, unknown_collection, validate_collection_name
from app.catalogue.ids import collection_stream
from events.errors import Conflict, InvalidRequest, WrongExpectedVersion
from events.sqlfiles import query
from events.store import NO_STREAM, EventStore
from events.subscription import Subscription
from projections.base import Projector

logger = logging.getLogger(__name__)
MAX_DESCRIPTION = 1000
STATUSES_SHOWN = ("uploaded", "converting", "converted", "chunking", "chunked", "embedding", "searchable",
                  "failed", "deleted")  # fmt: skip


@dataclass(frozen=True)
class Created:
    name: str
    description: str
    monthly_budget_usd: float | None
    position: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "monthly_budget_usd": self.monthly_budget_usd,
                "position": self.position}  # fmt: skip


def check_budget(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidRequest(f"monthly budget {value!r} is not an amount of USD (a number, 0 or more)")
    return float(value)


async def exists(store: EventStore, name: str) -> bool:
    if name == DEFAULT:
        return True
    events = await store.read_stream(collection_stream(name), 0, 1)
    return any(e.type == ev.CollectionCreated.TYPE for e in events)


async def require(store: EventStore, name: object) -> str:
    """``name`` if it is a valid name of an existing collection; InvalidRequest or UnknownCollection
    (naming ``chronos collections create``) otherwise. Uploads call this before reading any bytes."""
    valid = validate_collection_name(name)
    if not await exists(store, valid):
        raise unknown_collection(valid)
    return valid


async def create(
    store: EventStore, name: object, *, description: str = "", monthly_budget_usd: float | None = None, actor: str
) -> Created:
    """Record a new collection; Conflict if it exists (``default`` always does)."""
    valid = validate_collection_name(name)
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidRequest(f"a collection's description is text of at most {MAX_DESCRIPTION} characters")
    budget = check_budget(monthly_budget_usd)
    if valid == DEFAULT:
        raise Conflict("collection 'default' always exists; set its budget instead of creating it")
    event = ev.CollectionCreated(name=valid, description=description, monthly_budget_usd=budget)
    try:
        result = await store.append(collection_stream(valid), [new_event(event, {"actor": actor})], NO_STREAM)
    except WrongExpectedVersion:
        raise Conflict(f"collection {valid!r} exists already (`chronos collections list`)") from None
    logger.info("created collection %s", valid, extra={"action": "collection_create", "collection": valid,
                                                        "actor": actor})  # fmt: skip
    return Created(valid, description, budget, result.last_position)


async def created_view(store: EventStore, created: Created) -> dict[str, Any]:
    """A collection just created, as ``listing`` shows it, read from its own event: the projection may
    not have it yet (another process holds its checkpoint, or an open transaction holds the log's safe
    horizon back), and the answer must not depend on that."""
    [first] = await store.read_stream(collection_stream(created.name), 0, 1)
    return {"name": created.name, "description": created.description, "documents": 0,
            "monthly_budget_usd": created.monthly_budget_usd, "created_at": first.recorded_at}  # fmt: skip


async def set_budget(store: EventStore, name: object, monthly_budget_usd: float | None, *, actor: str) -> int:
    """Record a collection's monthly budget (None removes it); returns the event's position."""
    valid = await require(store, name)
    event = ev.CollectionBudgetSet(name=valid, monthly_budget_usd=check_budget(monthly_budget_usd))
    result = await store.append(collection_stream(valid), [new_event(event, {"actor": actor})])
    logger.info(
        "set the monthly budget of collection %s",
        valid,
        extra={"action": "collection_budget", "collection": valid, "budget_usd": monthly_budget_usd},
    )
    return result.last_position


def _number(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


async def listing(pool: asyncpg.Pool, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every collection (``names``: only those), with its live document count."""
    return [
        {"name": r["name"], "description": r["description"], "monthly_budget_usd": _number(r["monthly_budget_usd"]),
         "created_at": r["created_at"], "documents": int(r["documents"])}
        for r in await pool.fetch(query("collections", "list"), names)
    ]  # fmt: skip


async def stats(pool: asyncpg.Pool, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Per collection: documents by status, serving chunks and their vectors, bytes of live documents,
    spend this month (UTC)."""
    known = await listing(pool, names)
    out: dict[str, dict[str, Any]] = {
        c["name"]: {"name": c["name"], "documents": 0, "by_status": {}, "chunks": 0, "vectors": 0, "bytes": 0,
                    "spent_this_month_usd": 0.0, "monthly_budget_usd": c["monthly_budget_usd"]}
        for c in known
    }  # fmt: skip
    wanted = list(out)
    for r in await pool.fetch(query("collections", "stats_documents"), wanted):
        row = out.get(r["collection"])
        if row is None:
            continue
        row["by_status"][r["status"]] = int(r["documents"])
        if r["status"] != "deleted":
            row["documents"] += int(r["documents"])
            row["bytes"] += int(r["bytes"])
    for r in await pool.fetch(query("collections", "stats_index"), wanted):
        if r["collection"] in out:
            out[r["collection"]].update(chunks=int(r["chunks"]), vectors=int(r["vectors"]))
    for r in await pool.fetch(query("collections", "stats_spend"), wanted):
        if r["collection"] in out:
            out[r["collection"]]["spent_this_month_usd"] = float(r["spent_usd"] or 0)
    return list(out.values())


async def catch_up(store: EventStore, projector: Projector) -> None:
    """Apply what the log holds to the collections projection now (the CLI and POST /collections list
    what they created without waiting for the running projector)."""
    await Subscription(store, projector.subscription, projector.apply).catch_up()
