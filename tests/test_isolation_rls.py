"""Row-level security for analysts limited to some collections (issue 15): a role granted only
``alpha`` sees nothing of ``bravo`` in any relation the analyst role can read — every view, table and
the event log, enumerated from the catalogue so a new view cannot be forgotten — while the unrestricted
``chronos_analyst`` and the service's own role still see every row."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import pytest_asyncio

from app.catalogue import events as ev
from app.errors import InvalidRequest
from app.services import analysts
from events import EventStore, PgBlobStore
from events.migrations import migrate
from events.types import DbConn
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors
from tests.test_analyst import with_user

ALPHA, BRAVO = "alpha", "bravo"


async def upload_into(doc: SyntheticDocument, collection: str) -> None:
    ref = await doc.blobs.put_bytes(f"%PDF-1.7 {doc.document_id}".encode(), "application/pdf")
    await doc.append(ev.DocumentUploaded(
        document_id=doc.document_id, filename=doc.filename, media_type="application/pdf", size=ref.size,
        sha256=ref.sha256, blob=ev.BlobRef.of(ref), source="cli", collection=collection,
    ))  # fmt: skip


async def document(store: EventStore, blobs: PgBlobStore, collection: str, name: str, seed: int) -> SyntheticDocument:
    doc = SyntheticDocument(store, blobs, filename=name)
    await upload_into(doc, collection)
    await doc.convert(seconds=100.0 * (seed + 1))
    await doc.chunk([f"{name} first words", f"{name} second words"])
    await doc.embed(random_unit_vectors(np.random.default_rng(seed), 2, 8), "local:m8")
    return doc


@pytest_asyncio.fixture(loop_scope="session")
async def limited_role(pool: asyncpg.Pool) -> AsyncIterator[str]:
    role = f"chronos_test_alpha_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide
    await pool.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'alpha-s3cret'")
    try:
        yield role
    finally:
        await pool.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def analyst_relations(pool: asyncpg.Pool) -> list[str]:
    """Every table and view of the schema that chronos_analyst may read."""
    rows = await pool.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        "AND c.relkind IN ('r', 'v', 'm', 'p') AND has_table_privilege('chronos_analyst', c.oid, 'SELECT') "
        "ORDER BY 1"
    )
    return [r["relname"] for r in rows]


async def rows_as(conn: DbConn, relation: str, role: str | None) -> list[str]:
    async with conn.transaction():
        if role is not None:
            await conn.execute(f"SET LOCAL ROLE {role}")
        rows = await conn.fetch(f'SELECT row_to_json(t)::text AS j FROM "{relation}" t')
    return sorted(r["j"] for r in rows)


async def test_a_limited_analyst_sees_only_its_collections_everywhere(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, limited_role: str
) -> None:
    a = await document(store, blobs, ALPHA, "alpha-open.pdf", 0)
    b = await document(store, blobs, BRAVO, "bravo-secret.pdf", 1)
    gone = await document(store, blobs, BRAVO, "bravo-deleted-secret.pdf", 2)
    await gone.delete()
    await catch_up_all(pool, dsn)
    assert await analysts.grant(pool, limited_role, [ALPHA]) == [ALPHA]
    hidden = [b.document_id, gone.document_id, "bravo-secret", "bravo-deleted", BRAVO, b.chunk_set_id or "?"]
    relations = await analyst_relations(pool)
    assert {"documents", "chunks", "vectors", "cost_ledger", "events", "v_documents", "v_budget_month"} <= set(
        relations
    )
    problems: list[str] = []
    async with pool.acquire() as conn:
        for relation in relations:
            everything = await rows_as(conn, relation, None)  # the service's role
            limited = await rows_as(conn, relation, limited_role)
            unlimited = await rows_as(conn, relation, "chronos_analyst")
            if unlimited != everything:
                problems.append(
                    f"{relation}: chronos_analyst sees {len(unlimited)} rows, the service {len(everything)}"
                )
            leaked = [m for m in hidden if any(m in row for row in limited)]
            if leaked:
                problems.append(f"{relation}: the alpha-only role sees {leaked}")
            if any(a.document_id in row for row in everything) and not any(a.document_id in row for row in limited):
                problems.append(f"{relation}: the alpha-only role does not see alpha's own rows")
        views = await conn.fetch(
            "SELECT c.relname, coalesce(c.reloptions, '{}') AS options FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v' "
            "AND has_table_privilege('chronos_analyst', c.oid, 'SELECT')"
        )
        for v in views:
            if "security_invoker=true" not in v["options"]:
                problems.append(f"view {v['relname']} runs with its owner's rights (security_invoker is not set)")
        # Aggregates: the month and the daily costs hold alpha's spend only.
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {limited_role}")
            limited_month = await conn.fetchval("SELECT spent_usd FROM v_budget_month")
            hits = await conn.fetch("SELECT document_id FROM search_chunks($1::vector, 10)", np.ones(8, np.float32))
        all_month = await conn.fetchval("SELECT spent_usd FROM v_budget_month")
        alpha_spend = await conn.fetchval("SELECT sum(amount_usd) FROM cost_ledger WHERE document_id = $1",
                                          uuid.UUID(a.document_id))  # fmt: skip
    assert not problems, "\n".join(problems)
    assert limited_month == alpha_spend < all_month
    assert {str(h["document_id"]) for h in hits} == {a.document_id}


async def test_a_limited_analyst_logs_in_and_learns_only_its_own_grants(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, limited_role: str
) -> None:
    await document(store, blobs, ALPHA, "alpha-open.pdf", 0)
    await document(store, blobs, BRAVO, "bravo-secret.pdf", 1)
    await catch_up_all(pool, dsn)
    await analysts.grant(pool, limited_role, [ALPHA])
    conn = await asyncpg.connect(with_user(dsn, limited_role, "alpha-s3cret"))
    try:
        assert await conn.fetchval("SELECT array_agg(DISTINCT collection) FROM documents") == [ALPHA]
        assert await conn.fetchval("SELECT chronos_analyst_collections(current_user)") == [ALPHA]
        assert await conn.fetchval("SELECT chronos_analyst_collections('chronos_selector')") == []  # not a member
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM analyst_collections")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT chronos_role_collections('chronos_analyst')")
        # Its limits hold when it acts as the unlimited role it is a member of.
        await conn.execute("SET ROLE chronos_analyst")
        assert await conn.fetchval("SELECT array_agg(DISTINCT filename) FROM v_documents") == ["alpha-open.pdf"]
        assert await conn.fetchval("SELECT count(*) FROM documents") == 1
    finally:
        await conn.close()


async def test_grants_are_checked_and_revoking_the_last_collection_is_refused(
    pool: asyncpg.Pool, limited_role: str
) -> None:
    with pytest.raises(InvalidRequest, match="no database role"):
        await analysts.grant(pool, "no_such_role_at_all", [ALPHA])
    with pytest.raises(InvalidRequest, match="superuser"):
        await analysts.grant(pool, str(await pool.fetchval("SELECT current_user")), [ALPHA])
    with pytest.raises(InvalidRequest):
        await analysts.grant(pool, limited_role, ["Not A Name"])
    assert await analysts.grant(pool, limited_role, [ALPHA, BRAVO]) == [ALPHA, BRAVO]
    assert await pool.fetchval("SELECT pg_has_role($1, 'chronos_analyst', 'MEMBER')", limited_role)
    assert await analysts.revoke(pool, limited_role, [BRAVO]) == [ALPHA]
    with pytest.raises(InvalidRequest, match="see all of them"):
        await analysts.revoke(pool, limited_role, [ALPHA])
    assert await analysts.listing(pool) == [{"role": limited_role, "collections": [ALPHA], "exists": True}]


async def test_policies_survive_a_replay(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str, limited_role: str
) -> None:
    from projections.replay import replay

    await document(store, blobs, ALPHA, "alpha-open.pdf", 0)
    b = await document(store, blobs, BRAVO, "bravo-secret.pdf", 1)
    await catch_up_all(pool, dsn)
    await analysts.grant(pool, limited_role, [ALPHA])
    await replay(pool, dsn, progress=False)
    async with pool.acquire() as conn:
        for relation in ("documents", "chunks", "vectors", "cost_ledger", "v_documents", "v_cost_by_document"):
            limited = await rows_as(conn, relation, limited_role)
            assert limited and not any(b.document_id in row for row in limited), relation
            assert any(b.document_id in row for row in await rows_as(conn, relation, "chronos_analyst")), relation


async def test_a_changed_view_file_re_applies_the_ones_after_it(dsn: str, tmp_path: Path) -> None:
    """A view file's DROP … CASCADE drops what later files built on it (grants, security_invoker): so
    every view file after a re-applied one is applied again."""
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "sql"
    (root / "views").mkdir(parents=True)
    (root / "001_t.sql").write_text(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (n int);")
    view = f"DROP VIEW IF EXISTS {schema}.v CASCADE; CREATE VIEW {schema}.v AS SELECT n{{}} FROM {schema}.t;"
    (root / "views" / "010_v.sql").write_text(view.format(""))
    (root / "views" / "090_opts.sql").write_text(f"ALTER VIEW {schema}.v SET (security_invoker = true);")
    conn = await asyncpg.connect(dsn)  # (a database of this test's own: its migrations table is ours)
    try:
        await conn.execute("DELETE FROM schema_migrations")
        assert await migrate(conn, root) == ["001_t.sql", "views/010_v.sql", "views/090_opts.sql"]
        (root / "views" / "010_v.sql").write_text(view.format(", 1 AS one"))
        assert await migrate(conn, root) == ["views/010_v.sql", "views/090_opts.sql"]
        options = await conn.fetchval(f"SELECT reloptions FROM pg_class WHERE oid = '{schema}.v'::regclass")
        assert options == ["security_invoker=true"]
        assert await migrate(conn, root) == []
    finally:
        await conn.close()
