"""Connections to PostgreSQL: one place that sets codecs and session settings."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

APP_SETTINGS = {
    # Our own appends notify through events/notifier.py (coalesced), not the per-statement trigger.
    "chronos.app_notifier": "on",
    "application_name": "chronos",
}


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _jsonb_encode(value: Any) -> bytes:
    # jsonb's binary wire format: a version byte (1) and the JSON text. Binary so COPY works too.
    return b"\x01" + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb as Python objects through orjson; pgvector's ``vector`` type when installed."""
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    has_vector = await conn.fetchval("SELECT to_regtype('vector') IS NOT NULL")
    if has_vector:
        from pgvector.asyncpg import register_vector

        await register_vector(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`` on every release -- one more round trip per pooled query, which cost
    a third of single-event append throughput. asyncpg still rolls back an open transaction and
    drops listeners before calling this. Code on pooled connections uses ``SET LOCAL`` and
    transaction-level advisory locks, so there is no session state to clear."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
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
    await init_connection(conn)
    return conn
