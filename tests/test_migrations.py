"""Migrations: idempotent, frozen once applied, race-free, views re-applied when changed."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from app.db import throwaway_database
from events.errors import MigrationError
from events.migrations import discover, migrate
from events.sqlfiles import sql_dir

_fresh = itertools.count()


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A private copy of sql/ that a test may edit."""
    root = tmp_path / "sql"
    shutil.copytree(sql_dir(), root)
    return root


@pytest_asyncio.fixture(loop_scope="session")
async def empty_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    name = f"chronos_empty_{os.getpid()}_{next(_fresh)}"
    async with throwaway_database(pg_admin_dsn, name) as dsn:
        yield dsn


async def recorded(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT filename, checksum FROM schema_migrations")
    return {r["filename"]: r["checksum"] for r in rows}


async def test_rerun_is_a_noop(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        before = await recorded(conn)
        assert set(before) == {m.filename for m in discover()}
        assert await migrate(conn) == []
        assert await migrate(conn) == []
        assert await recorded(conn) == before
    finally:
        await conn.close()


async def test_fresh_database_gets_every_file_in_order(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn)
    try:
        applied = await migrate(conn)
        numbered = [m.filename for m in discover() if m.kind == "migration"]
        assert applied[: len(numbered)] == numbered
        assert await conn.fetchval("SELECT to_regclass('events') IS NOT NULL")
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_edited_applied_migration_is_refused_by_name(dsn: str, sql_copy: Path) -> None:
    target = sql_copy / "002_blobs.sql"
    target.write_text(target.read_text() + "\nCREATE TABLE sneaky (x int);\n")
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(MigrationError, match=r"sql/002_blobs\.sql was edited after it was applied"):
            await migrate(conn, root=sql_copy)
        assert not await conn.fetchval("SELECT to_regclass('sneaky') IS NOT NULL")
        # The lock was released on the way out: a correct tree migrates again at once.
        assert await asyncio.wait_for(migrate(conn), 5) == []
    finally:
        await conn.close()


async def test_new_migration_applied_once(dsn: str, sql_copy: Path) -> None:
    (sql_copy / "999_extra.sql").write_text("CREATE TABLE extra (x int);\n")
    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate(conn, root=sql_copy) == ["999_extra.sql"]
        assert await migrate(conn, root=sql_copy) == []
    finally:
        await conn.close()


async def test_failing_migration_names_file_and_leaves_nothing(dsn: str, sql_copy: Path) -> None:
    (sql_copy / "999_broken.sql").write_text("CREATE TABLE half (x int);\nSELECT no_such_function();\n")
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(MigrationError, match=r"sql/999_broken\.sql failed"):
            await migrate(conn, root=sql_copy)
        assert not await conn.fetchval("SELECT to_regclass('half') IS NOT NULL")
        assert "999_broken.sql" not in await recorded(conn)
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_exactly_once(empty_dsn: str, sql_copy: Path) -> None:
    # A counter migration: re-applying it would fail on the primary key (and show up in the count).
    (sql_copy / "999_counter.sql").write_text(
        "CREATE TABLE applied_count (id int PRIMARY KEY);\nINSERT INTO applied_count VALUES (1);\n"
    )
    conns = [await asyncpg.connect(empty_dsn) for _ in range(5)]
    try:
        results = await asyncio.gather(*(migrate(c, root=sql_copy) for c in conns))
        everything = [name for r in results for name in r]
        expected = [m.filename for m in discover(sql_copy)]
        assert sorted(everything) == sorted(expected)  # each file by exactly one of the five
        assert sum(1 for r in results if r) == 1  # the first to get the lock did all; the rest saw it done
        assert await conns[0].fetchval("SELECT count(*) FROM applied_count") == 1
        assert set(await recorded(conns[0])) == set(expected)
    finally:
        for c in conns:
            await c.close()


async def test_views_reapplied_when_changed(dsn: str, sql_copy: Path) -> None:
    views = sql_copy / "views"
    views.mkdir(exist_ok=True)
    view = views / "v_test_answer.sql"
    view.write_text("CREATE OR REPLACE VIEW v_test_answer AS SELECT 41 AS answer;\n")
    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate(conn, root=sql_copy) == ["views/v_test_answer.sql"]
        assert await conn.fetchval("SELECT answer FROM v_test_answer") == 41
        assert await migrate(conn, root=sql_copy) == []
        view.write_text("CREATE OR REPLACE VIEW v_test_answer AS SELECT 42 AS answer;\n")
        assert await migrate(conn, root=sql_copy) == ["views/v_test_answer.sql"]
        assert await conn.fetchval("SELECT answer FROM v_test_answer") == 42
        kinds = await conn.fetchval("SELECT kind FROM schema_migrations WHERE filename = 'views/v_test_answer.sql'")
        assert kinds == "view"
    finally:
        await conn.close()


def test_misnamed_or_duplicate_numbers_are_refused(sql_copy: Path) -> None:
    (sql_copy / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNN_lowercase_name"):
        discover(sql_copy)
    (sql_copy / "1_bad.sql").unlink()
    first = sorted(sql_copy.glob("[0-9][0-9][0-9]_*.sql"))[0]
    (sql_copy / f"{first.name[:3]}_twin.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share number"):
        discover(sql_copy)
