"""``chronos costs reconcile --provider modal``: Modal's billing report (a stand-in for
``modal.billing.workspace_billing_report`` returning rows of Modal's own ``WorkspaceBillingReportItem``
shape) against the log's Modal cost lines; adjustments make each day's and the period's total equal
the bill, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import modal.billing
import pytest

from app.catalogue.codec import new_event
from app.catalogue.ids import stream_for
from app.check import run_checks
from app.convert import billing
from app.costs import CostLine
from events import EventStore
from projections.runner import catch_up_all

ROOT = Path(__file__).resolve().parent.parent


def utc_today() -> date:
    """The UTC date now (not at import: a suite that runs past midnight must not use yesterday's)."""
    return datetime.now(UTC).date()


def row(day: date, cost: str, app: str = "chronos-docling", tags: dict[str, str] | None = None) -> Any:
    item: modal.billing.WorkspaceBillingReportItem = {
        "object_id": f"ap-{app}",
        "description": app,
        "environment_name": "main",
        "interval_start": datetime(day.year, day.month, day.day, tzinfo=UTC),
        "cost": Decimal(cost),
        "tags": tags if tags is not None else ({"service": "chronos-ingest"} if app == "chronos-docling" else {}),
    }
    return item


async def record_modal_cost(store: EventStore, amount: float) -> None:
    """A Modal cost line of a conversion, as the convert stage appends it (recorded now)."""
    doc = str(uuid.uuid4())
    line = CostLine("modal", "gpu_seconds", amount / 0.000306, 0.000306, {"gpu": "A10G"})
    await store.append(stream_for(doc), [new_event(line.event(doc, "convert", str(uuid.uuid4())), {"actor": "test"})])


async def modal_total(pool: asyncpg.Pool, start: date, end: date) -> Decimal:
    ledger = await billing.ledger_by_day(pool, start, end)
    return sum(ledger.values(), Decimal(0))


@dataclass
class Bill:
    rows: list[Any] = field(default_factory=list)  # what Modal's report returns
    calls: list[dict[str, Any]] = field(default_factory=list)  # how it was called


@pytest.fixture
def bill(monkeypatch: pytest.MonkeyPatch) -> Bill:
    found = Bill()

    def report(**kwargs: Any) -> list[Any]:
        found.calls.append(kwargs)
        return list(found.rows)

    monkeypatch.setattr(modal.billing, "workspace_billing_report", report)
    return found


async def test_adjustments_make_the_modal_total_equal_the_bill_once(
    pool: asyncpg.Pool, store: EventStore, dsn: str, bill: Bill
) -> None:
    today, yesterday, tomorrow = utc_today(), utc_today() - timedelta(days=1), utc_today() + timedelta(days=1)
    later = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 1, tzinfo=UTC)  # today is complete by then
    await record_modal_cost(store, 0.25)
    await record_modal_cost(store, 0.125)  # 0.375 recorded today by the stages
    bill.rows += [row(today, "0.40123456"), row(yesterday, "0.05"), row(today, "9.99", app="someone-else")]
    result = await billing.reconcile_modal(pool, store, yesterday, tomorrow, now=later)
    [call] = bill.calls
    assert call["resolution"] == "d" and call["start"].tzinfo == UTC
    assert call["start"].date() == yesterday and call["end"].date() == tomorrow
    days = {d.day: d for d in result.days}
    assert days[today].bill_usd == Decimal("0.40123456") and days[today].ledger_usd == Decimal("0.375")
    assert days[today].adjustment_usd == Decimal("0.02623456")
    assert days[yesterday].adjustment_usd == Decimal("0.05")  # billed, never recorded: a container we never saw
    assert result.appended == 2 and result.bill_usd == Decimal("0.45123456")  # the other app is not ours
    assert await modal_total(pool, yesterday, tomorrow) == result.bill_usd
    # The cost_ledger projection (what `chronos costs` and analysts read) has the same total.
    await catch_up_all(pool, dsn)
    ledger = await pool.fetchval("SELECT sum(amount_usd) FROM cost_ledger WHERE provider = 'modal'")
    assert ledger == result.bill_usd
    adjustments = await pool.fetch("SELECT details FROM cost_ledger WHERE resource = 'adjustment'")
    assert sorted(
        json.loads(a["details"])["billed_day"] if isinstance(a["details"], str) else a["details"]["billed_day"]
        for a in adjustments
    ) == sorted([today.isoformat(), yesterday.isoformat()])
    # `chronos check` finds nothing paid twice (each adjustment is its own cause).
    assert not [f.to_json() for f in (await run_checks(pool)).errors if f.check == "duplicate_costs"]
    # Run again: nothing left to adjust, nothing appended.
    again = await billing.reconcile_modal(pool, store, yesterday, tomorrow, now=later)
    assert again.appended == 0 and all(d.adjustment_usd == 0 for d in again.days)


async def test_a_day_recorded_but_not_billed_is_adjusted_down_and_dry_run_writes_nothing(
    pool: asyncpg.Pool, store: EventStore, bill: Bill
) -> None:
    await record_modal_cost(store, 0.5)
    end = utc_today() + timedelta(days=1)
    tomorrow = datetime(end.year, end.month, end.day, 1, tzinfo=UTC)
    dry = await billing.reconcile_modal(pool, store, utc_today(), end, now=tomorrow, dry_run=True)
    assert [d.adjustment_usd for d in dry.days] == [Decimal("-0.5")] and dry.appended == 0
    assert await store.stream_version(billing.STREAM) == 0
    done = await billing.reconcile_modal(pool, store, utc_today(), end, now=tomorrow)
    assert done.appended == 1 and await modal_total(pool, utc_today(), end) == 0


async def test_only_complete_days_are_reconciled(pool: asyncpg.Pool, store: EventStore, bill: Bill) -> None:
    await record_modal_cost(store, 0.5)
    # Today is not over: Modal's report leaves it out, so it must not be "adjusted" to zero.
    with pytest.raises(billing.ReconcileError, match="complete UTC days"):
        await billing.reconcile_modal(pool, store, utc_today(), date.fromordinal(utc_today().toordinal() + 1))
    assert bill.calls == []


def test_reconcile_without_modal_credentials_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["CHRONOS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "costs",
            "reconcile",
            "--provider",
            "modal",
            "--from",
            "2026-05-01",
            "--to",
            "2026-06-01",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "MODAL_TOKEN_ID" in done.stderr and "Traceback" not in done.stderr
