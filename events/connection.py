"""Connections to PostgreSQL: one place that sets codecs and session settings.

Managed servers are not always plain PostgreSQL:

* pgvector may live in another schema than ``public`` (Supabase: ``extensions``). Its schema is read
  from ``pg_extension`` on every new connection, the codec is registered for it, and the schema is
  appended to the session's ``search_path`` when missing (the schema SQL and ``search_chunks()``
  name ``vector`` and ``<=>`` unqualified).
* Poolers (PgBouncer, Supavisor) refuse unknown startup parameters, so our own settings are set
  after connecting; in *transaction* mode they also hand one client's successive transactions to
  different server sessions, which breaks LISTEN, session advisory locks and prepared statements:
  ``transaction_pooled()`` detects that (``app/db.py`` refuses such a DATABASE_URL at start-up).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from events.sqlfiles import query
from events.types import DbConn

# Sent in the startup packet: poolers accept (and track) application_name.
APP_SETTINGS = {"application_name": "chronos"}
# Set by session_init on every new connection: "chronos.app_notifier = on" means our own appends
# notify through events/notifier.py (coalesced), not the per-statement trigger.


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _jsonb_encode(value: Any) -> bytes:
    # jsonb's binary wire format: a version byte (1) and the JSON text. Binary so COPY works too.
    return b"\x01" + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Session settings; jsonb as Python objects through orjson; pgvector's ``vector`` type, in
    whichever schema the extension was installed, when it is installed."""
    row = await conn.fetchrow(query("connection", "session_init"))
    assert row is not None
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    schema = row["vector_schema"]
    if schema is not None:
        if not row["vector_on_path"]:
            await conn.execute(query("connection", "append_search_path"), schema)
        from pgvector.asyncpg import register_vector

        await register_vector(conn, schema=schema)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`` on every release -- one more round trip per pooled query, which cost
    a third of single-event append throughput. asyncpg still rolls back an open transaction and
    drops listeners before calling this. Code on pooled connections uses ``SET LOCAL`` and
    transaction-level advisory locks, so there is no session state to clear (and the session
    settings made by ``init_connection`` must stay)."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """A pool whose connections carry Chronos codecs and settings."""
    settings = dict(APP_SETTINGS)
    settings.update(kwargs.pop("server_settings", {}))
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        server_settings=settings,
        **kwargs,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A single connection with the same codecs and settings as the pool."""
    settings = dict(APP_SETTINGS)
    settings.update(kwargs.pop("server_settings", {}))
    conn = await asyncpg.connect(dsn, server_settings=settings, **kwargs)
    try:
        await init_connection(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def transaction_pooled(dsn: str) -> bool:
    """Whether ``dsn`` reaches PostgreSQL through a pooler in transaction (or statement) mode.

    Connected directly or through a session-mode pooler, a client connection keeps one server
    session (one backend pid) and two client connections never share one. A transaction-mode pooler
    gives each transaction whichever server session is free: with LIFO reuse (PgBouncer's default)
    the second client gets the first one's session, with round robin one client's consecutive
    statements move between sessions -- either shows in the pids below. A pid seen twice proves
    pooling; a negative answer can only be likely, never proof. The probe uses no prepared
    statement cache, so it works through the pooler it is looking for."""
    a = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        b = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            seen: dict[int, set[int]] = {0: set(), 1: set()}
            for who in (0, 0, 1, 1, 0, 1):
                seen[who].add(await (a if who == 0 else b).fetchval(query("connection", "backend_pid")))
        finally:
            await b.close()
    finally:
        await a.close()
    return len(seen[0]) > 1 or len(seen[1]) > 1 or bool(seen[0] & seen[1])


@contextlib.asynccontextmanager
async def session_search_path(conn: DbConn, *schemas: str) -> AsyncIterator[None]:
    """``search_path`` set to ``schemas`` (then pgvector's schema) for the session while the block
    runs, outside any transaction; the connection's own setting again afterwards."""
    before = await conn.fetchval(query("connection", "current_search_path"))
    await conn.execute(query("connection", "set_session_search_path"), list(schemas))
    try:
        yield
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute(query("connection", "restore_search_path"), before)


async def set_local_search_path(conn: DbConn, *schemas: str) -> None:
    """``SET LOCAL search_path`` to ``schemas``, then pgvector's schema if it lives elsewhere."""
    await conn.execute(query("connection", "set_local_search_path"), list(schemas))
