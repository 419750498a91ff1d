"""Which database: ``DATABASE_URL``, or the embedded PostgreSQL + pgvector under ``CHRONOS_HOME``
(``app/embedded.py``: started on first use, password authentication, minimal environment).

Start-up (``open_pool``) also checks what ``DATABASE_URL`` points at: a pooler in transaction mode
(PgBouncer, Supavisor) is refused with the reason, and after the migrations PUBLIC's TEMP privilege on
the database is revoked again (see ``sql/views/090_analyst_role.sql``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from app.config import Settings
from app.embedded import (
    DatabaseUnavailable,
    EmbeddedStatus,
    embedded_status,
    start_embedded,
    stop_embedded,
    tune_embedded,
)
from app.embedded_auth import credentials_path
from events.connection import connect, create_pool, transaction_pooled
from events.migrations import LOCK_KEY, migrate
from events.sqlfiles import query

logger = logging.getLogger(__name__)
DEFAULT_DATABASE = "chronos"

__all__ = [
    "DEFAULT_DATABASE",
    "DatabaseUnavailable",
    "EmbeddedStatus",
    "embedded_status",
    "ensure_database",
    "migrate_database",
    "open_pool",
    "redact",
    "resolve_dsn",
    "start_embedded",
    "stop_embedded",
    "tune_embedded",
    "with_database",
]

TRANSACTION_POOLER = (
    "DATABASE_URL ({dsn}) goes through a connection pooler in transaction mode (PgBouncer, Supavisor): "
    "one connection's transactions ran in different server sessions. Chronos Ingest keeps session state "
    "there (LISTEN for wake-ups, the migrations' advisory lock, prepared statements), so it cannot work "
    "through it. Use the direct connection or the pooler's session mode instead (Supabase: the direct "
    "host db.<project>.supabase.co or the session pooler on port 5432, not port 6543; PgBouncer: "
    "pool_mode = session). See docs/sql.md."
)


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, parts.fragment))


async def ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # another process won the race
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def throwaway_database(
    admin_dsn: str,
    name: str,
    *,
    template: str | None = None,
    prepare: Callable[[asyncpg.Connection], Awaitable[object]] | None = None,
) -> AsyncIterator[str]:
    """A database of its own for a test or a benchmark: created (empty, or cloned from ``template``),
    set up by ``prepare`` (e.g. ``events.migrations.migrate``), yielded as a DSN, dropped afterwards
    even when sessions are still connected. A database of the same name left by a crashed run is
    dropped first."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        clone = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clone}')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    try:
        if prepare is not None:
            conn = await asyncpg.connect(dsn)
            try:
                await prepare(conn)
            finally:
                await conn.close()
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def resolve_dsn(settings: Settings) -> str:
    """The DSN to use: ``DATABASE_URL`` as given, else the embedded server's ``chronos`` database."""
    if settings.database_url:
        return settings.database_url
    admin = start_embedded(settings.pgdata)
    try:
        await ensure_database(admin, DEFAULT_DATABASE)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = _reason(exc, settings)
        raise DatabaseUnavailable(f"could not use the embedded server ({redact(admin)}): {reason}") from exc
    return with_database(admin, DEFAULT_DATABASE)


async def open_pool(settings: Settings, *, max_size: int = 10, run_migrations: bool = True) -> tuple[str, asyncpg.Pool]:
    """Resolve the DSN, refuse a transaction-mode pooler, apply migrations, and open a pool with Chronos codecs."""
    dsn = await resolve_dsn(settings)
    try:
        if settings.database_url and await transaction_pooled(dsn):
            raise DatabaseUnavailable(TRANSACTION_POOLER.format(dsn=redact(dsn)))
        if run_migrations:
            await migrate_database(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=max_size)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"could not use the database at {redact(dsn)}: {_reason(exc, settings)}") from exc
    return dsn, pool


async def migrate_database(dsn: str) -> list[str]:
    """Apply the migrations (on a connection whose search_path reaches pgvector wherever it is
    installed) and revoke PUBLIC's TEMP; returns the files applied."""
    conn = await connect(dsn)
    try:
        applied = await migrate(conn)
        await revoke_public_temp(conn)
    finally:
        await conn.close()
    return applied


async def revoke_public_temp(conn: asyncpg.Connection) -> None:
    """PUBLIC's TEMP on the database, revoked at every start (clones of a migrated database get it back)."""
    async with conn.transaction():
        await conn.execute(query("db", "migrations_xact_lock"), LOCK_KEY)
        await conn.execute(query("db", "revoke_public_temp"))


def _reason(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, asyncpg.InvalidPasswordError) and not settings.database_url:
        return (
            f"{exc} -- the password in {credentials_path(settings.home)} is not the embedded server's; restore "
            f"the file that belongs to this server, or set a new one: in {settings.pgdata / 'pg_hba.conf'} replace "
            "scram-sha-256 by trust and run `chronos db start` (see docs/sql.md)"
        )
    return str(exc)


def redact(dsn: str) -> str:
    """A DSN with its password hidden, for messages."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return dsn
