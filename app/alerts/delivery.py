"""Delivering recorded alerts to ``CHRONOS_ALERT_WEBHOOK_URL`` and recording the outcome in the
alert's stream (why outside any transaction, one process per alert: app/alerts/__init__.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

import asyncpg

from app.alerts.state import AlertState, month_alerts, recent_alerts
from app.alerts.webhook import Delivery, origin, post_alert
from app.catalogue.codec import new_event
from app.catalogue.events import BudgetAlertDelivered, BudgetAlertDeliveryFailed
from app.catalogue.ids import budget_delivered_event_id, budget_stream
from app.config import Settings
from events.errors import WrongExpectedVersion
from events.sqlfiles import query
from events.store import EventStore
from events.types import NewEvent

logger = logging.getLogger(__name__)

REDELIVER_AFTER_S = 600.0
"""A delivery whose attempts all failed is tried again this long after (the webhook may be back)."""
MAX_ROUNDS = 6
"""Rounds of attempts per alert before it stays failed (``chronos costs --resend-alerts`` tries again)."""
ACTOR = "budget-alerts"


def alert_body(alert: AlertState) -> dict[str, object]:
    """The POSTed JSON: Slack's incoming webhooks read ``text``; the rest is for other receivers."""
    c = alert.crossed
    return {
        "text": c.message,
        "event": "BudgetThresholdCrossed",
        "alert_id": alert.event_id,
        "month": c.month,
        "threshold_pct": c.threshold_pct,
        "spent_usd": c.spent_usd,
        "budget_usd": c.budget_usd,
        "crossed_at": alert.crossed_at.isoformat(),
    }


@dataclass(frozen=True)
class Outcome:
    alert_id: str
    month: str
    threshold_pct: int
    delivery: Delivery


def due(alert: AlertState, now: dt.datetime, *, force: bool, redeliver_after_s: float) -> bool:
    if alert.delivered is not None:
        return False
    if force or not alert.failures:
        return True
    last = alert.failures[-1][0]
    return len(alert.failures) < MAX_ROUNDS and (now - last).total_seconds() >= redeliver_after_s


class Deliverer:
    """Sends the alerts of this and last month that no process has delivered yet."""

    def __init__(
        self,
        store: EventStore,
        settings: Settings,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        redeliver_after_s: float = REDELIVER_AFTER_S,
        poll_interval: float = 60.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.redeliver_after_s = redeliver_after_s
        self.poll_interval = poll_interval
        self.kick = asyncio.Event()

    async def deliver_pending(self, *, force: bool = False) -> list[Outcome]:
        """One sweep. ``force``: also alerts whose rounds ran out or failed moments ago."""
        url = self.settings.alert_webhook_url
        if url is None:
            return []
        now = dt.datetime.now(dt.UTC)
        outcomes = []
        for alert in await recent_alerts(self.store.pool):
            if due(alert, now, force=force, redeliver_after_s=self.redeliver_after_s):
                outcome = await self._deliver(url, alert.event_id, alert.crossed.month, force=force)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    async def _deliver(self, url: str, alert_id: str, month: str, *, force: bool) -> Outcome | None:
        async with self.store.pool.acquire() as conn:
            if not await conn.fetchval(query("alerts", "try_lock"), alert_id):
                return None  # another process is delivering it right now
            try:
                # Under the lock, read again: another process may have finished it meanwhile.
                alert = next((a for a in await month_alerts(conn, month) if a.event_id == alert_id), None)
                now = dt.datetime.now(dt.UTC)
                if alert is None or not due(alert, now, force=force, redeliver_after_s=self.redeliver_after_s):
                    return None
                delivery = await post_alert(
                    url, alert_body(alert), attempts=self.settings.alert_webhook_attempts,
                    backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s,
                )  # fmt: skip
                await self._record(alert, url, delivery)
            finally:
                await conn.fetchval(query("alerts", "unlock"), alert_id)
        return Outcome(alert_id, month, alert.crossed.threshold_pct, delivery)

    async def _record(self, alert: AlertState, url: str, delivery: Delivery) -> None:
        c = alert.crossed
        extra = {"action": "budget_alert_delivery", "alert_event_id": alert.event_id, "month": c.month,
                 "threshold_pct": c.threshold_pct, "webhook": origin(url), "attempts": delivery.attempts,
                 "status_code": delivery.status_code}  # fmt: skip
        recorded: NewEvent
        if delivery.ok:
            event_id = budget_delivered_event_id(alert.event_id)
            delivered = BudgetAlertDelivered(
                alert_event_id=alert.event_id, month=c.month, threshold_pct=c.threshold_pct, webhook=origin(url),
                attempts=delivery.attempts, status_code=delivery.status_code or 0,
            )  # fmt: skip
            recorded = new_event(delivered, {"actor": ACTOR}, event_id)
            logger.info("budget alert %s %d %% delivered to %s", c.month, c.threshold_pct, origin(url), extra=extra)
        else:
            failed = BudgetAlertDeliveryFailed(
                alert_event_id=alert.event_id, month=c.month, threshold_pct=c.threshold_pct, webhook=origin(url),
                attempts=delivery.attempts, error=delivery.error or "", status_code=delivery.status_code,
            )  # fmt: skip
            recorded = new_event(failed, {"actor": ACTOR}, uuid.uuid4())
            logger.error(
                "budget alert %s %d %% could not be delivered to %s after %d attempt(s): %s", c.month,
                c.threshold_pct, origin(url), delivery.attempts, delivery.error,
                extra={**extra, "error": delivery.error},
            )  # fmt: skip
        for attempt in range(5):
            try:
                await self.store.append(budget_stream(c.month), [recorded])
                return
            except WrongExpectedVersion:  # a checker appended the next threshold at the same version
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep at start (alerts a crashed process left), when kicked, and every ``poll_interval``."""
        while not stop.is_set():
            self.kick.clear()
            try:
                await self.deliver_pending()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("budget alert delivery sweep failed: %s", exc,
                               extra={"action": "budget_alert_sweep", "error": str(exc)})  # fmt: skip
            kicked = asyncio.ensure_future(self.kick.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({kicked, stopping}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            kicked.cancel()
            stopping.cancel()
