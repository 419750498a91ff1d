"""Per-collection budgets (issue 15): each collection's monthly budget beside the global one, in
``GET /costs?collection=``, ``chronos costs --collection`` and the reprocess budget stop; a cost line
belongs to its document's collection, also after the document is deleted."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import pytest

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.ids import collection_stream
from app.config import Settings
from app.errors import OverBudget
from app.services import reprocess
from app.services.budget import check_quote, collection_months
from app.services.selection import Selection
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument
from tests.api_support import AUTH, asgi_client
from tests.cli_support import Cli, cli_env
from tests.test_isolation_rls import upload_into

ALPHA, BRAVO = "alpha", "bravo"


async def collection(store: EventStore, name: str, budget: float | None) -> None:
    created = ev.CollectionCreated(name=name, description=f"{name} team", monthly_budget_usd=budget)
    await store.append(collection_stream(name), [new_event(created, {"actor": "test"})])


async def pdf(store: EventStore, blobs: PgBlobStore, where: str, seconds: float) -> SyntheticDocument:
    """A converted PDF in ``where`` whose conversion cost ``seconds`` of local CPU."""
    doc = SyntheticDocument(store, blobs, filename=f"{where}-{uuid.uuid4().hex[:6]}.pdf")
    await upload_into(doc, where)
    await doc.convert(seconds=seconds)
    return doc


async def spent(pool: asyncpg.Pool, doc: SyntheticDocument) -> Decimal:
    value = await pool.fetchval("SELECT sum(amount_usd) FROM cost_ledger WHERE document_id = $1",
                                uuid.UUID(doc.document_id))  # fmt: skip
    return Decimal(value)


async def test_a_collections_budget_stops_a_paid_reprocess_in_it_only(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    await collection(store, ALPHA, 0.01)  # far below one GPU conversion's quote
    await collection(store, BRAVO, None)
    a = await pdf(store, blobs, ALPHA, 10.0)
    b = await pdf(store, blobs, BRAVO, 10.0)
    await catch_up_all(pool, dsn)
    settings = Settings(database_url=dsn)
    wanted = reprocess.StageRequest(stage="convert", backend="modal", reason="test")
    plan = await reprocess.plan(pool, settings, Selection(document_ids=(a.document_id, b.document_id)), wanted)
    assert plan.quote.usd > 0 and set(plan.by_collection) == {ALPHA, BRAVO}
    assert sum(plan.by_collection.values()) == pytest.approx(plan.quote.usd)
    assert plan.quote.to_json()["by_collection"].keys() == {ALPHA, BRAVO}
    with pytest.raises(OverBudget, match=r"collection alpha: .* its \$0\.01 monthly budget"):
        await reprocess.execute(pool, store, settings, plan, actor="test")
    only_b = await reprocess.plan(pool, settings, Selection(document_ids=(b.document_id,)), wanted)
    assert only_b.by_collection == {BRAVO: only_b.quote.usd}
    await reprocess.execute(pool, store, settings, only_b, actor="test")  # bravo has no budget of its own
    assert only_b.requested == 1
    await reprocess.execute(pool, store, settings, plan, actor="test", over_budget_ok=True)  # confirmed
    # The global budget still holds on its own.
    with pytest.raises(OverBudget, match="monthly budget"):
        await check_quote(pool, Settings(database_url=dsn, monthly_budget_usd=Decimal("0.001")), 1.0,
                          over_budget_ok=False, by_collection={BRAVO: 1.0})  # fmt: skip


async def test_api_reprocess_answers_the_collections_budget_stop(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    await collection(store, ALPHA, 0.01)
    a = await pdf(store, blobs, ALPHA, 10.0)
    await catch_up_all(pool, dsn)
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        r = await client.post(f"/documents/{a.document_id}/reprocess", json={"stage": "convert", "backend": "modal"},
                              headers=AUTH)  # fmt: skip
        assert r.status_code == 409 and r.json()["error"]["code"] == "over_budget", r.text
        assert "collection alpha" in r.json()["error"]["message"]


async def test_costs_per_collection_keep_a_deleted_documents_spend(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    await collection(store, ALPHA, 5.0)
    await collection(store, BRAVO, None)
    a = await pdf(store, blobs, ALPHA, 100.0)
    b = await pdf(store, blobs, BRAVO, 300.0)
    await a.delete()
    await catch_up_all(pool, dsn)
    a_usd, b_usd = await spent(pool, a), await spent(pool, b)
    months = {m.collection: m for m in await collection_months(pool, None)}
    assert months[ALPHA].spent_usd == a_usd and months[ALPHA].budget_usd == Decimal(5)
    assert months[BRAVO].spent_usd == b_usd and months[BRAVO].budget_usd is None
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        body = (await client.get("/costs", params={"collection": ALPHA}, headers=AUTH)).json()
        assert body["total_usd"] == pytest.approx(float(a_usd))
        assert body["collections"] == [months[ALPHA].to_json()]
        assert body["month"]["budget_usd"] == 5.0 and body["month"]["spent_usd"] == pytest.approx(float(a_usd))
        assert {p["collection"] for d in body["days"] for p in d["parts"]} == {ALPHA}
        every = (await client.get("/costs", headers=AUTH)).json()
        assert every["total_usd"] == pytest.approx(float(a_usd + b_usd))
        assert {c["collection"] for c in every["collections"]} >= {ALPHA, BRAVO}
        assert every["month"]["budget_usd"] == 50.0  # the global budget
        day = every["days"][-1]["by_collection"]
        assert day[ALPHA] == pytest.approx(float(a_usd)) and day[BRAVO] == pytest.approx(float(b_usd))
    cli = Cli(cli_env(DATABASE_URL=dsn))
    report = (await cli("costs", "--collection", ALPHA, "--json")).json()
    assert report["collection"] == ALPHA and report["budget_usd"] == 5.0
    assert report["spent_usd"] == pytest.approx(float(a_usd))
    text = (await cli("costs")).out
    assert "collection alpha" in text and "of $5.00 budget" in text and "collection bravo" in text
    missing = await cli("costs", "--collection", "nowhere", ok=False)
    assert missing.code != 0 and "collection 'nowhere' does not exist" in missing.err
