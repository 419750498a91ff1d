"""The analyst role reads projections and views; it cannot write nor read the raw blob store."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import numpy as np
import pytest

from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors


async def test_analyst_role(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str) -> None:
    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.convert()
    await doc.chunk(["a", "b"])
    await doc.embed(random_unit_vectors(np.random.default_rng(0), 2, 8), "local:m8")
    await catch_up_all(pool, dsn)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE chronos_analyst")
        assert await conn.fetchval("SELECT status FROM v_documents") == "searchable"
        assert await conn.fetchval("SELECT count(*) FROM v_stage_events") == 3
        assert await conn.fetchval("SELECT budget_usd FROM v_budget_month") == 50
        assert await conn.fetchval("SELECT count(*) FROM v_cost_daily") == 1
        assert await conn.fetchval("SELECT count(*) FROM v_stage_latency_daily") == 3
        assert await conn.fetchval("SELECT count(*) FROM search_chunks($1::vector, 2)", np.ones(8, np.float32)) == 2
    denied = [
        "INSERT INTO documents (document_id, filename, status, stream_version, last_position) "
        "VALUES (gen_random_uuid(), 'x', 'uploaded', 1, 1)",
        "UPDATE documents SET status = 'failed'",
        "DELETE FROM chunks",
        "SELECT * FROM blobs",
        "SELECT * FROM blob_chunks",
        "UPDATE settings SET value = '0'",
    ]
    for sql in denied:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL ROLE chronos_analyst")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)


async def test_costs_month_to_date_and_budget(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import Settings
    from app.services.budget import month_to_date

    doc = SyntheticDocument(store, blobs)
    await doc.upload()
    await doc.convert(seconds=100.0)
    await catch_up_all(pool, dsn)
    report = (await month_to_date(pool, Settings())).to_json()
    assert report["spent_usd"] == pytest.approx(100 * 0.0000131)
    assert (report["budget_usd"], report["over_budget"]) == (50.0, False)
    monkeypatch.setenv("CHRONOS_MONTHLY_BUDGET_USD", "0.001")
    assert (await month_to_date(pool, Settings.from_env())).over_budget is True


# --- PUBLIC's defaults revoked (issue 11, item 9) ---------------------------------------------------

ANALYST_REFUSED = [
    "CREATE TEMP TABLE scratch (n int)",
    "CREATE TABLE public.scratch (n int)",
    "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SELECT lo_create(0)",
    "SELECT lo_from_bytea(0, 'hidden bytes')",
    "SELECT pg_notify('chronos_events', '999999')",
    "SELECT * FROM blobs",
    "SELECT * FROM blob_chunks",
]


async def refused_statements(conn: asyncpg.Connection, statements: list[str], role: str | None = None) -> list[str]:
    """The statements that fail with insufficient privilege (each in its own rolled-back transaction)."""
    refused = []
    for sql in statements:
        tx = conn.transaction()
        await tx.start()
        try:
            if role is not None:
                await conn.execute(f"SET LOCAL ROLE {role}")
            await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError:
            refused.append(sql)
        finally:
            await tx.rollback()
    return refused


async def test_analyst_can_create_nothing_nor_notify(dsn: str) -> None:
    from app.db import migrate_database

    await migrate_database(dsn)  # what every start-up does (TEMP is revoked on this clone too)
    conn = await asyncpg.connect(dsn)
    try:
        assert await refused_statements(conn, ANALYST_REFUSED, "chronos_analyst") == ANALYST_REFUSED
        creatable = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE has_schema_privilege('chronos_analyst', oid, 'CREATE')"
        )
        assert creatable == []
        assert not await conn.fetchval("SELECT has_database_privilege('chronos_analyst', current_database(), 'TEMP')")
        # The service's own role keeps all of it (superuser here; granted explicitly elsewhere).
        assert await refused_statements(conn, ANALYST_REFUSED) == []
    finally:
        await conn.close()


async def test_foreign_writer_still_wakes_listeners(dsn: str) -> None:
    """pg_notify() is revoked from PUBLIC, so the events trigger runs as its owner (SECURITY DEFINER):
    a writer that is not the service (a script's role with INSERT on events) still notifies."""
    writer = f"chronos_test_writer_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide
    admin = await asyncpg.connect(dsn)
    received: list[str] = []
    await admin.add_listener("chronos_events", lambda *args: received.append(args[3]))
    try:
        await admin.execute(f"CREATE ROLE {writer} NOLOGIN")
        await admin.execute(f"GRANT INSERT ON events TO {writer}")
        async with admin.transaction():
            await admin.execute(f"SET LOCAL ROLE {writer}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await admin.execute("SELECT pg_notify('chronos_events', '1')")
        async with admin.transaction():
            await admin.execute(f"SET LOCAL ROLE {writer}")
            await admin.execute(
                "INSERT INTO events (event_id, stream_id, stream_version, type, data) "
                "VALUES (gen_random_uuid(), 'foreign-writer', 1, 'Thing', '{}'::jsonb)"
            )
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.02)
        top = await admin.fetchval("SELECT max(position) FROM events")
        assert received == [str(top)]
    finally:
        await admin.execute(f"DROP OWNED BY {writer}; DROP ROLE {writer}")
        await admin.close()


def with_user(dsn: str, user: str, password: str | None) -> str:
    parts = urlsplit(dsn)
    cred = user if password is None else f"{user}:{quote(password, safe='')}"
    return urlunsplit((parts.scheme, f"{cred}@{parts.netloc.rsplit('@', 1)[-1]}", parts.path, parts.query, ""))


async def test_analyst_login_over_the_embedded_socket(tmp_path: Path) -> None:
    """The embedded server as `chronos` runs it: an analyst logs in with their own password only."""
    from app.config import Settings
    from app.db import open_pool, stop_embedded

    settings = Settings(home=tmp_path / "home")
    try:
        dsn, pool = await open_pool(settings, max_size=2)
        try:
            await pool.execute("CREATE ROLE alice LOGIN PASSWORD 'alice-s3cret' IN ROLE chronos_analyst")
        finally:
            await pool.close()
        for password in (None, "wrong", ""):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(with_user(dsn, "alice", password))
        alice = await asyncpg.connect(with_user(dsn, "alice", "alice-s3cret"))
        try:
            assert await alice.fetchval("SELECT count(*) FROM v_documents") == 0
            assert await alice.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
            assert await refused_statements(alice, ANALYST_REFUSED) == ANALYST_REFUSED
        finally:
            await alice.close()
    finally:
        await asyncio.to_thread(stop_embedded, settings.pgdata)


async def test_analyst_views_carry_collection_and_metadata(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    from app.catalogue import events as ev
    from app.catalogue.codec import new_event
    from app.catalogue.ids import collection_stream

    created = ev.CollectionCreated(name="finance", monthly_budget_usd=10.0)
    await store.append(collection_stream("finance"), [new_event(created, {"actor": "test"})])
    doc = SyntheticDocument(store, blobs)
    await doc.upload(collection="finance", metadata={"dept": "finance"})
    await doc.convert(seconds=2.0)
    await doc.chunk(["a", "b"])
    await doc.embed(random_unit_vectors(np.random.default_rng(0), 2, 8), "local:m8")
    await doc.update_metadata({"quarter": "q3"})
    await catch_up_all(pool, dsn)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE chronos_analyst")
        row = await conn.fetchrow("SELECT collection, metadata FROM v_documents")
        assert row is not None and tuple(row) == ("finance", {"dept": "finance", "quarter": "q3"})
        chunks = await conn.fetch('SELECT collection, metadata FROM v_chunks WHERE metadata @> \'{"quarter": "q3"}\'')
        assert [r["collection"] for r in chunks] == ["finance", "finance"]
        assert await conn.fetchval("SELECT collection FROM v_document_revisions") == "finance"
        assert await conn.fetchval("SELECT collection FROM v_cost_by_document") == "finance"
        spent = await conn.fetch("SELECT collection, documents, spent_this_month_usd > 0 AS paid FROM v_collections "
                                 "ORDER BY collection")  # fmt: skip
        assert [tuple(r) for r in spent] == [("default", 0, False), ("finance", 1, True)]
