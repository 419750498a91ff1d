"""The monthly budget, resolved in one place: ``CHRONOS_MONTHLY_BUDGET_USD`` (Settings) when set,
else the ``monthly_budget_usd`` row of the ``settings`` table (default $50, the product plan's alert
threshold). ``chronos costs``, ``GET /costs``, ``/metrics``, the reprocess budget stop and the budget
alerts (app/alerts/) all use it."""

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


async def check_quote(pool: asyncpg.Pool, settings: Settings, quote_usd: float, *, over_budget_ok: bool) -> None:
    """OverBudget when spending ``quote_usd`` now would cross the monthly budget (unless allowed)."""
    if quote_usd <= 0 or over_budget_ok:
        return
    month = await month_to_date(pool, settings)
    if month.spent_usd + Decimal(str(quote_usd)) > month.budget_usd:
        raise OverBudget(
            f"${month.spent_usd:.2f} spent + ${quote_usd:.2f} quoted would cross the ${month.budget_usd:.2f} "
            "monthly budget; confirm going over it (--over-budget, or over_budget: true through the API)"
        )
