"""Budget alerts against a real local HTTP server as the webhook: 80 % and then 100 % of the monthly
budget send one alert each, a second crossing in the same month sends none, a failing webhook is
retried with backoff, a refusing one is reported (``chronos check``) and resent on request, checkers
and deliverers racing in several pools record and send each alert once, and the worker's services do
it all on their own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import asyncpg
import orjson
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from app.alerts.crossing import NAME, BudgetCheck, check_month, month_of
from app.alerts.delivery import Deliverer
from app.alerts.state import month_alerts, recent_alerts
from app.catalogue.codec import new_event
from app.catalogue.events import CostIncurred
from app.catalogue.ids import budget_alert_event_id, budget_stream, stream_for
from app.check import run_checks
from app.config import Settings
from app.pipeline.backend import budget_alert_services
from app.runtime import open_runtime
from app.supervisor import Supervisor
from events.connection import create_pool
from events.store import EventStore
from events.subscription import Subscription
from tests.api_support import asgi_client, wait_until
from tests.webhook_standin import Webhook, webhook_server

ROOT = Path(__file__).resolve().parent.parent


async def spend(store: EventStore, usd: float, *, resource: str = "cpu_seconds") -> None:
    doc = str(uuid.uuid4())
    cost = CostIncurred(
        document_id=doc, stage="convert", provider="local", resource=resource, quantity=usd / 0.0000131,
        unit_price_usd=0.0000131, amount_usd=usd, caused_by=str(uuid.uuid4()),
    )  # fmt: skip
    await store.append(stream_for(doc), [new_event(cost, {"actor": "test"})])


def settings(dsn: str, hook: Webhook | None, budget: str = "10", attempts: int = 5) -> Settings:
    return Settings(
        database_url=dsn, monthly_budget_usd=Decimal(budget), alert_webhook_url=hook.url if hook else None,
        alert_webhook_attempts=attempts,
    )  # fmt: skip


def fast(store: EventStore, s: Settings) -> Deliverer:
    return Deliverer(store, s, backoff_s=0.01, max_backoff_s=0.05)


async def this_month(pool: asyncpg.Pool) -> str:
    return month_of(await pool.fetchval("SELECT now()"))


async def stream_types(pool: asyncpg.Pool, month: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM events WHERE stream_id = $1 ORDER BY stream_version", budget_stream(month)
    )
    return [r["type"] for r in rows]


@pytest_asyncio.fixture(loop_scope="session")
async def second_store(dsn: str) -> AsyncIterator[EventStore]:
    """Another pool on the same database: what a second process would hold."""
    pool = await create_pool(dsn, min_size=1, max_size=10)
    try:
        yield EventStore(pool)
    finally:
        await pool.close()


async def test_crossing_80_then_100_sends_two_alerts_and_crossing_again_sends_none(
    dsn: str, store: EventStore, tmp_path: Path
) -> None:
    with webhook_server() as hook:
        s = settings(dsn, hook)
        sub = Subscription(store, NAME, BudgetCheck(store, s).handle)
        deliver = fast(store, s)
        month = await this_month(store.pool)

        await spend(store, 5.0)  # 50 %
        await sub.catch_up()
        assert await deliver.deliver_pending() == [] and hook.bodies() == []

        await spend(store, 3.5)  # 85 %
        await sub.catch_up()
        await deliver.deliver_pending()
        [first] = hook.bodies()
        assert first["content_type"] == "application/json" and first["path"] == "/services/T000/B000/secret-part"
        assert first["body"]["threshold_pct"] == 80 and first["body"]["month"] == month
        assert "80 %" in first["body"]["text"] and "$8.50 of $10.00" in first["body"]["text"]
        assert first["body"]["alert_id"] == str(budget_alert_event_id(month, 80))

        await spend(store, 2.0)  # 105 %
        await sub.catch_up()
        await deliver.deliver_pending()
        assert [b["body"]["threshold_pct"] for b in hook.bodies()] == [80, 100]
        assert "over its monthly budget" in hook.bodies()[1]["body"]["text"]

        # Down below 80 % (a negative adjustment, as chronos costs reconcile appends) and across both
        # thresholds again: the same month alerts once per threshold, so nothing more is sent.
        await spend(store, -3.0, resource="adjustment")
        await sub.catch_up()
        await spend(store, 4.0)
        await sub.catch_up()
        await deliver.deliver_pending()
        assert len(hook.bodies()) == 2
        assert await stream_types(store.pool, month) == [
            "BudgetThresholdCrossed", "BudgetAlertDelivered", "BudgetThresholdCrossed", "BudgetAlertDelivered",
        ]  # fmt: skip
        alerts = await month_alerts(store.pool, month)
        assert [(a.crossed.threshold_pct, a.status, a.delivered and a.delivered.attempts) for a in alerts] == [
            (80, "delivered", 1), (100, "delivered", 1),
        ]  # fmt: skip
        assert alerts[0].delivered and alerts[0].delivered.webhook == hook.url.split("/services")[0]  # no secret

    # chronos costs shows them (a real CLI process).
    env = dict(os.environ, DATABASE_URL=dsn, CHRONOS_HOME=str(tmp_path), CHRONOS_MONTHLY_BUDGET_USD="10",
               CHRONOS_ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook", PYTHONPATH=str(ROOT))  # fmt: skip

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "costs", *args], cwd=ROOT, env=env, capture_output=True, check=True,
            timeout=120, text=True,
        )  # fmt: skip
        return done.stdout

    report = orjson.loads(await asyncio.to_thread(cli, "--json"))
    assert [(a["threshold_pct"], a["delivery"]) for a in report["alerts"]] == [(80, "delivered"), (100, "delivered")]
    text = await asyncio.to_thread(cli)
    assert f"alert {month} 80 % of budget: crossed" in text and "delivered to the webhook (1 attempt(s))" in text


async def test_a_failing_webhook_is_retried_with_backoff(dsn: str, store: EventStore) -> None:
    with webhook_server(answers=[503, 429, 500]) as hook:
        s = settings(dsn, hook)
        await spend(store, 9.0)
        await check_month(store, s, await this_month(store.pool))
        [outcome] = await fast(store, s).deliver_pending()
        assert outcome.delivery.ok and outcome.delivery.attempts == 4
        assert hook.statuses == [503, 429, 500, 200]
        assert len({b["body"]["alert_id"] for b in hook.bodies()}) == 1  # the same alert, retried
        [alert] = await recent_alerts(store.pool)
        assert alert.status == "delivered" and alert.delivered and alert.delivered.attempts == 4


async def test_a_webhook_that_keeps_failing_is_reported_and_resent_on_request(dsn: str, store: EventStore) -> None:
    with webhook_server(answers=[503, 503, 503, 404]) as hook:
        s = settings(dsn, hook, attempts=3)
        await spend(store, 8.0)
        await check_month(store, s, await this_month(store.pool))
        deliver = fast(store, s)
        [outcome] = await deliver.deliver_pending()
        assert not outcome.delivery.ok and outcome.delivery.attempts == 3 and hook.statuses == [503, 503, 503]
        [alert] = await recent_alerts(store.pool)
        assert alert.status == "failed" and alert.to_json()["last_error"].startswith("HTTP 503")
        report = await run_checks(store.pool)
        [finding] = [f for f in report.findings if f.check == "budget_alerts"]
        assert finding.severity == "warning" and "80 %: HTTP 503" in finding.examples[0]

        assert await deliver.deliver_pending() == []  # tried again later, not at once
        assert len(hook.statuses) == 3

        [refused] = await deliver.deliver_pending(force=True)  # chronos costs --resend-alerts
        assert not refused.delivery.ok and refused.delivery.attempts == 1  # a 404 is not retried
        assert hook.statuses == [503, 503, 503, 404]

        [sent] = await deliver.deliver_pending(force=True)
        assert sent.delivery.ok and hook.statuses[-1] == 200
        [alert] = await recent_alerts(store.pool)
        assert alert.status == "delivered" and alert.to_json()["attempts"] == 5
        assert not [f for f in (await run_checks(store.pool)).findings if f.check == "budget_alerts"]


async def test_concurrent_checkers_append_one_event_and_deliverers_send_it_once(
    dsn: str, store: EventStore, second_store: EventStore
) -> None:
    with webhook_server() as hook:
        s = settings(dsn, hook)
        await spend(store, 12.0)  # both thresholds at once
        month = await this_month(store.pool)
        stores = [store, second_store] * 4
        results = await asyncio.gather(*(check_month(st, s, month) for st in stores))
        for pct in (80, 100):
            crossings = [c for r in results for c in r if c.threshold_pct == pct]
            assert len(crossings) == len(stores) and sum(c.appended for c in crossings) == 1
        assert await stream_types(store.pool, month) == ["BudgetThresholdCrossed", "BudgetThresholdCrossed"]

        deliverers = [fast(st, s) for st in stores]
        await asyncio.gather(*(d.deliver_pending() for d in deliverers))
        assert sorted(b["body"]["threshold_pct"] for b in hook.bodies()) == [80, 100]  # each sent once
        types = await stream_types(store.pool, month)
        assert types.count("BudgetAlertDelivered") == 2 and len(types) == 4


async def test_the_worker_services_check_and_deliver_on_their_own(dsn: str, tmp_path: Path) -> None:
    with webhook_server(answers=[502]) as hook:
        s = replace(settings(dsn, hook), home=tmp_path)
        async with open_runtime(s) as rt:
            services = budget_alert_services(rt, poll_interval=0.1)
            assert [sv.name for sv in services] == ["budget-alerts", "budget-alert-delivery"]
            month = await this_month(rt.pool)

            async def delivered() -> bool:
                return [a.status for a in await month_alerts(rt.pool, month)] == ["delivered"]

            async with Supervisor(services).running():
                await spend(rt.store, 8.2)  # 82 %: the subscription sees it, the deliverer is kicked
                await wait_until(delivered, timeout=60)
        assert hook.statuses == [502, 200]
        assert hook.bodies()[0]["body"]["alert_id"] == str(budget_alert_event_id(month, 80))


async def test_metrics_count_this_months_alerts_by_delivery(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    with webhook_server(answers=[400]) as hook:
        async with asgi_client(dsn, pool, store, monthly_budget_usd=Decimal(10), alert_webhook_url=hook.url,
                               alert_webhook_attempts=1) as (client, _app, rt):  # fmt: skip
            await spend(store, 10.0)
            await check_month(store, rt.settings, await this_month(pool))
            await fast(store, rt.settings).deliver_pending()
            text = (await client.get("/metrics")).text
    assert hook.statuses == [400, 200]  # 80 % refused, 100 % accepted
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "chronos_budget_alerts"]
    assert {(s.labels["threshold_pct"], s.labels["delivery"]): s.value for s in family.samples} == {
        ("80", "failed"): 1.0, ("100", "delivered"): 1.0,
    }  # fmt: skip


async def test_no_webhook_records_the_alert_and_sends_nothing(dsn: str, store: EventStore) -> None:
    s = settings(dsn, None)
    await spend(store, 10.0)
    crossings = await check_month(store, s, await this_month(store.pool))
    assert [(c.threshold_pct, c.appended) for c in crossings] == [(80, True), (100, True)]
    assert await fast(store, s).deliver_pending() == []
    assert [a.status for a in await recent_alerts(store.pool)] == ["pending", "pending"]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "hooks.slack.com/services/x", "https://"])
def test_a_webhook_url_that_is_not_http_is_a_clear_configuration_error(url: str) -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError, match=r"CHRONOS_ALERT_WEBHOOK_URL=.* is not an http"):
        Settings.from_env({"CHRONOS_ALERT_WEBHOOK_URL": url})
