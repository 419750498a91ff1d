"""Analyst roles limited to some collections: ``analyst_collections`` (migration 085), read by the
row-level security policies of ``sql/views/099_analyst_collections.sql``. A role granted some collections sees
only their rows in the projections, the log and the analyst views; a role granted none sees every row.

Granting also makes the role a member of ``chronos_analyst`` (the SELECT privileges) when it is not yet.
Roles are the database's own: create them first (``CREATE ROLE alice LOGIN PASSWORD …``, docs/sql.md).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from app.errors import InvalidRequest
from events.sqlfiles import query
from events.types import DbConn

logger = logging.getLogger(__name__)
ANALYST_ROLE = "chronos_analyst"


async def _role(conn: DbConn, role: str) -> str:
    row = await conn.fetchrow(query("analysts", "role"), role)
    if row is None:
        raise InvalidRequest(
            f"no database role {role!r}: create it first (CREATE ROLE {role} LOGIN PASSWORD '…'; docs/sql.md)"
        )
    if row["rolsuper"] or row["rolbypassrls"]:
        raise InvalidRequest(f"role {role!r} is a superuser or has BYPASSRLS: row-level security cannot limit it")
    return str(row["rolname"])


async def grant(pool: asyncpg.Pool, role: str, collections: list[str]) -> list[str]:
    """Limit ``role`` to ``collections`` (added to those it has); returns the role's collections now."""
    from app.catalogue.collections import validate_collection_name

    for name in collections:
        validate_collection_name(name)
    async with pool.acquire() as conn, conn.transaction():
        name = await _role(conn, role)
        for collection in dict.fromkeys(collections):
            await conn.execute(query("analysts", "grant"), name, collection)
        if not await conn.fetchval(query("analysts", "is_member"), name, ANALYST_ROLE):
            await conn.execute(f'GRANT {ANALYST_ROLE} TO "{name.replace(chr(34), chr(34) * 2)}"')
        now = await conn.fetchval(query("analysts", "of_role"), name)
    logger.info("analyst role limited", extra={"action": "analysts_grant", "role": name, "collections": now})
    return list(now or [])


async def revoke(pool: asyncpg.Pool, role: str, collections: list[str]) -> list[str]:
    """Take ``collections`` from ``role``; returns what it keeps. A role left with none sees every
    collection again, so revoking the last one is refused: revoke chronos_analyst instead (or grant
    another collection first)."""
    async with pool.acquire() as conn, conn.transaction():
        name = await _role(conn, role)
        before = list(await conn.fetchval(query("analysts", "of_role"), name) or [])
        unknown = [c for c in collections if c not in before]
        if unknown:
            raise InvalidRequest(f"role {name!r} is not granted collection {unknown[0]!r} (it has: {before or 'none'})")
        left = [c for c in before if c not in collections]
        if not left:
            raise InvalidRequest(
                f"revoking every collection of {name!r} would let it see all of them: "
                f"REVOKE {ANALYST_ROLE} FROM {name} to take its access away, or grant another collection first"
            )
        await conn.execute(query("analysts", "revoke"), name, collections)
    logger.info("analyst role collections revoked", extra={"action": "analysts_revoke", "role": name,
                                                           "collections": left})  # fmt: skip
    return left


async def listing(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [
        {"role": r["role_name"], "collections": list(r["collections"]), "exists": r["exists"]}
        for r in await pool.fetch(query("analysts", "list"))
    ]
