"""Reconciling the ledger with Modal's bill: ``chronos costs reconcile --provider modal``.

The stages price each document's share of container time (``app.costs.modal_usage``), but only
Modal sees everything it bills: scheduling, a container stopped before its idle window ended, CPU or
memory used above the reservation, image builds, region multipliers. This reads Modal's billing
report (``modal.billing.workspace_billing_report``, daily, UTC) for the app, compares each day with
the Modal cost lines of the log, and appends one adjustment ``CostIncurred`` per day that differs
(``resource: "adjustment"``, ``details.billed_day``), so each day's and the period's Modal total
equal the bill.

* Only complete days are reconciled (Modal leaves partial intervals out of its report); a later run
  picks up the rest.
* Idempotent: adjustments count towards the day they adjust, so a second run finds nothing to add;
  they are appended to the stream ``billing-modal`` at the version read first, so two runs at once
  cannot both add the same difference.
* Amounts are compared from the log itself (the ``cost_ledger`` projection may be behind).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.convert.modal_client import APP_NAME
from app.errors import Unavailable
from events.errors import WrongExpectedVersion
from events.sqlfiles import query
from events.store import EventStore
from events.types import NewEvent

log = logging.getLogger(__name__)

STREAM = "billing-modal"
APP_TAG = ("service", "chronos-ingest")  # the tag app/modal_app.py puts on the app
CENT = Decimal("0.00000001")  # the ledger's scale (cost_ledger.amount_usd numeric(14, 8))
NAMESPACE = uuid.UUID("3f7c2a90-6d1e-4b8f-a5c4-9e0d2b6f1a37")


class ReconcileError(Unavailable):
    """The bill could not be read or the adjustments not recorded; the message says what to do."""

    code = "reconcile_failed"


@dataclass
class Day:
    day: date
    bill_usd: Decimal
    ledger_usd: Decimal
    adjustment_usd: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "bill_usd": float(self.bill_usd),
            "ledger_usd": float(self.ledger_usd),
            "adjustment_usd": float(self.adjustment_usd),
        }


@dataclass
class Reconciliation:
    start: date
    end: date  # exclusive
    app: str
    days: list[Day] = field(default_factory=list)
    appended: int = 0
    dry_run: bool = False

    @property
    def bill_usd(self) -> Decimal:
        return sum((d.bill_usd for d in self.days), Decimal(0))

    @property
    def ledger_before_usd(self) -> Decimal:
        return sum((d.ledger_usd for d in self.days), Decimal(0))

    @property
    def adjustment_usd(self) -> Decimal:
        return sum((d.adjustment_usd for d in self.days), Decimal(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": "modal",
            "app": self.app,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "bill_usd": float(self.bill_usd),
            "ledger_before_usd": float(self.ledger_before_usd),
            "adjustment_usd": float(self.adjustment_usd),
            "ledger_after_usd": float(self.ledger_before_usd + (self.adjustment_usd if not self.dry_run else 0)),
            "adjustments_appended": self.appended,
            "dry_run": self.dry_run,
            "days": [d.to_json() for d in self.days],
        }


def fetch_report(start: date, end: date) -> list[Mapping[str, Any]]:
    """Modal's daily billing report for [start, end) (needs MODAL_TOKEN_ID/SECRET of the workspace)."""
    import modal.billing
    import modal.exception as mex

    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    until = datetime(end.year, end.month, end.day, tzinfo=UTC)
    try:
        with warnings.catch_warnings():
            # Modal 1.6.4 marks this function deprecated (for modal.Workspace ... billing.report) from
            # 2026-06-18; it reads the same report.
            warnings.simplefilter("ignore", mex.DeprecationError)
            rows = modal.billing.workspace_billing_report(
                start=begin, end=until, resolution="d", tag_names=[APP_TAG[0]]
            )
    except (mex.AuthError, mex.PermissionDeniedError) as exc:
        raise ReconcileError(
            f"Modal refused the billing report ({exc}); set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET "
            "to a token of the workspace the app is deployed in"
        ) from exc
    except (mex.ConnectionError, ConnectionError, OSError, mex.TimeoutError) as exc:
        raise ReconcileError(
            f"could not reach Modal for the billing report ({type(exc).__name__}: {exc}); "
            "nothing was changed, try again later"
        ) from exc
    return list(rows)


def ours(row: Mapping[str, Any], app: str) -> bool:
    tags = row.get("tags") or {}
    return row.get("description") == app or (app == APP_NAME and tags.get(APP_TAG[0]) == APP_TAG[1])


def bill_by_day(rows: Sequence[Mapping[str, Any]], app: str, start: date, end: date) -> dict[date, Decimal]:
    bill: dict[date, Decimal] = {}
    for row in rows:
        if not ours(row, app):
            continue
        started = row["interval_start"]
        day = started.astimezone(UTC).date() if isinstance(started, datetime) else date.fromisoformat(str(started))
        if start <= day < end:
            bill[day] = bill.get(day, Decimal(0)) + Decimal(str(row["cost"]))
    return bill


async def ledger_by_day(pool: asyncpg.Pool, start: date, end: date) -> dict[date, Decimal]:
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    until = datetime(end.year, end.month, end.day, tzinfo=UTC)
    ledger: dict[date, Decimal] = {}
    for row in await pool.fetch(query("billing", "modal_costs_by_day"), begin, until, STREAM):
        ledger[row["day"]] = ledger.get(row["day"], Decimal(0)) + row["usd"]
    for row in await pool.fetch(query("billing", "adjustments_by_day"), STREAM):
        if row["day"] is not None and start <= row["day"] < end:
            ledger[row["day"]] = ledger.get(row["day"], Decimal(0)) + row["usd"]
    return ledger


def complete_until(end: date, now: datetime | None = None) -> date:
    """Modal reports full days only: never reconcile past the start of today (UTC)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return min(end, today)


async def reconcile_modal(
    pool: asyncpg.Pool,
    store: EventStore,
    start: date,
    end: date,
    *,
    app: str = APP_NAME,
    report: Sequence[Mapping[str, Any]] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    actor: str = "cli",
) -> Reconciliation:
    """Append the adjustments that make each complete day's Modal total in [start, end) equal the bill."""
    end = complete_until(end, now)
    if end <= start:
        raise ReconcileError(
            f"nothing to reconcile between {start} and {end}: Modal bills complete UTC days "
            "only; choose a --from before today"
        )
    version = await store.stream_version(STREAM)
    rows = report if report is not None else await asyncio.to_thread(fetch_report, start, end)
    bill = bill_by_day(rows, app, start, end)
    ledger = await ledger_by_day(pool, start, end)
    result = Reconciliation(start, end, app, dry_run=dry_run)
    events: list[NewEvent] = []
    run_id = uuid.uuid4()
    for day in sorted(set(bill) | set(ledger)):
        billed, recorded = bill.get(day, Decimal(0)), ledger.get(day, Decimal(0))
        diff = (billed - recorded).quantize(CENT)
        result.days.append(Day(day, billed, recorded, diff))
        if diff != 0:
            events.append(_adjustment(day, billed, recorded, diff, app, run_id, actor))
    if events and not dry_run:
        try:
            await store.append(STREAM, events, expected_version=version)
        except WrongExpectedVersion as exc:
            raise ReconcileError(
                "another reconciliation of Modal costs ran at the same time; nothing was "
                "appended by this one, run it again"
            ) from exc
        result.appended = len(events)
    log.info(
        "Modal costs reconciled",
        extra={
            "from": str(start),
            "to": str(end),
            "appended": result.appended,
            "adjustment_usd": str(result.adjustment_usd),
        },
    )
    return result


def _adjustment(
    day: date, billed: Decimal, recorded: Decimal, diff: Decimal, app: str, run_id: uuid.UUID, actor: str
) -> NewEvent:
    # The same day, bill and ledger give the same id: a retried run does not add it twice. An
    # adjustment belongs to no stage result: it is its own cause (one line per cause and resource).
    event_id = uuid.uuid5(NAMESPACE, f"modal:{app}:{day.isoformat()}:{billed}:{recorded}")
    cost = ev.CostIncurred(
        document_id=None, stage="convert", provider="modal", resource="adjustment", quantity=1.0,
        unit_price_usd=float(diff), amount_usd=float(diff), caused_by=str(event_id),
        details={"kind": "reconciliation", "run": str(run_id), "billed_day": day.isoformat(),
                 "bill_usd": str(billed), "ledger_usd": str(recorded), "app": app,
                 "source": "modal.billing.workspace_billing_report"},
    )  # fmt: skip
    return new_event(cost, {"actor": actor, "causation_id": str(run_id)}, event_id)


def default_period(now: datetime | None = None) -> tuple[date, date]:
    """This month so far: the first of the month to today (exclusive)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    first = today.replace(day=1)
    return (first, today) if today > first else ((first - timedelta(days=1)).replace(day=1), today)
