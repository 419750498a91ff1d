"""The monthly budget, resolved in one place: ``CHRONOS_MONTHLY_BUDGET_USD`` (Settings) when set,
else the ``monthly_budget_usd`` row of the ``settings`` table (default $50, the product plan's alert
threshold). ``chronos costs``, ``GET /costs``, ``/metrics``, the reprocess budget stop and the budget
alerts (app/alerts/) all use it.

Beside it each collection may have a monthly budget of its own (the ``collections`` projection's
``monthly_budget_usd``, set by CollectionCreated / CollectionBudgetSet; NULL: none). A cost line belongs to
its document's collection (joined through ``documents``, which keeps deleted documents: their spend stays
in their collection); lines of no document (query embeddings, bill reconciliation) count only globally.
A paid request must fit both: the global budget and the budget of every collection it spends in
(``check_quote``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from app.config import Settings
from app.errors import OverBudget
from events.sqlfiles import query
from events.types import DbConn


@dataclass(frozen=True)
class MonthToDate:
    month: str  # first day of the month, ISO
    spent_usd: Decimal
    budget_usd: Decimal
    by_stage_provider: list[dict[str, Any]]

    @property
    def remaining_usd(self) -> Decimal:
        return self.budget_usd - self.spent_usd

    @property
    def over_budget(self) -> bool:
        return self.spent_usd > self.budget_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "spent_usd": float(self.spent_usd),
            "budget_usd": float(self.budget_usd),
            "remaining_usd": float(self.remaining_usd),
            "over_budget": self.over_budget,
            "by_stage_provider": self.by_stage_provider,
        }


def resolve_budget(settings: Settings, stored_usd: Decimal | None) -> Decimal:
    """The rule: ``CHRONOS_MONTHLY_BUDGET_USD`` when set, else the settings table's row, else $50."""
    if settings.monthly_budget_usd is not None:
        return settings.monthly_budget_usd
    return Decimal(stored_usd) if stored_usd is not None else Decimal(50)


async def budget_usd(pool: asyncpg.Pool | DbConn, settings: Settings) -> Decimal:
    """The monthly budget (the same for every month: there is no history of it)."""
    if settings.monthly_budget_usd is not None:
        return settings.monthly_budget_usd
    return resolve_budget(settings, await pool.fetchval(query("alerts", "stored_budget")))


async def month_to_date(pool: asyncpg.Pool | DbConn, settings: Settings) -> MonthToDate:
    """This month's spend and budget (``pool``: or a connection, e.g. inside a read-only snapshot)."""
    row = await pool.fetchrow(query("api", "budget"))
    assert row is not None
    budget = resolve_budget(settings, row["budget_usd"])
    lines = await pool.fetch(query("api", "spend_month_by_stage_provider"))
    return MonthToDate(
        month=row["month"].isoformat(),
        spent_usd=Decimal(row["spent_usd"]),
        budget_usd=budget,
        by_stage_provider=[{"stage": r["stage"], "provider": r["provider"], "usd": float(r["usd"])} for r in lines],
    )


@dataclass(frozen=True)
class CollectionMonth:
    """One collection's month-to-date spend and its own budget (None: it has none)."""

    collection: str
    month: str
    spent_usd: Decimal
    budget_usd: Decimal | None

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.spent_usd > self.budget_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "month": self.month,
            "spent_usd": float(self.spent_usd),
            "budget_usd": float(self.budget_usd) if self.budget_usd is not None else None,
            "remaining_usd": float(self.budget_usd - self.spent_usd) if self.budget_usd is not None else None,
            "over_budget": self.over_budget,
        }


async def collection_months(pool: asyncpg.Pool | DbConn, collections: list[str] | None) -> list[CollectionMonth]:
    """This month's spend and budget of each of ``collections`` (None: every collection known to the
    collections projection or holding spend this month), by name."""
    month = await pool.fetchval("SELECT date_trunc('month', now())::date")
    budgets = {r["name"]: r["monthly_budget_usd"] for r in await pool.fetch(query("budget", "collection_budgets"),
                                                                              collections)}  # fmt: skip
    spent = {r["collection"]: Decimal(r["usd"]) for r in await pool.fetch(query("budget", "spend_month_by_collection"),
                                                                           collections)}  # fmt: skip
    names = collections if collections is not None else sorted(set(budgets) | set(spent))
    return [
        CollectionMonth(
            collection=name,
            month=month.isoformat(),
            spent_usd=spent.get(name, Decimal(0)),
            budget_usd=Decimal(budgets[name]) if budgets.get(name) is not None else None,
        )
        for name in names
    ]


async def spend_by_stage_provider(pool: asyncpg.Pool | DbConn, collections: list[str]) -> list[dict[str, Any]]:
    """This month's spend in ``collections`` by stage and provider."""
    rows = await pool.fetch(query("budget", "spend_month_by_stage_provider_in"), collections)
    return [{"stage": r["stage"], "provider": r["provider"], "usd": float(r["usd"])} for r in rows]


_CONFIRM = "confirm going over it (--over-budget, or over_budget: true through the API)"


async def check_quote(
    pool: asyncpg.Pool,
    settings: Settings,
    quote_usd: float,
    *,
    over_budget_ok: bool,
    by_collection: dict[str, float] | None = None,
) -> None:
    """OverBudget when spending ``quote_usd`` now would cross the monthly budget, or when the part of it
    spent in a collection (``by_collection``: USD per collection) would cross that collection's budget
    (unless allowed)."""
    if quote_usd <= 0 or over_budget_ok:
        return
    month = await month_to_date(pool, settings)
    if month.spent_usd + Decimal(str(quote_usd)) > month.budget_usd:
        raise OverBudget(
            f"${month.spent_usd:.2f} spent + ${quote_usd:.2f} quoted would cross the ${month.budget_usd:.2f} "
            f"monthly budget; {_CONFIRM}"
        )
    spending = {c: usd for c, usd in (by_collection or {}).items() if usd > 0}
    if not spending:
        return
    for cm in await collection_months(pool, sorted(spending)):
        quoted = Decimal(str(spending[cm.collection]))
        if cm.budget_usd is not None and cm.spent_usd + quoted > cm.budget_usd:
            raise OverBudget(
                f"collection {cm.collection}: ${cm.spent_usd:.2f} spent + ${quoted:.2f} quoted would cross its "
                f"${cm.budget_usd:.2f} monthly budget; {_CONFIRM}"
            )
