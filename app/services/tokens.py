"""API tokens: created, listed and revoked by ``chronos tokens``; checked by the API on every request.

A token is ``chr_`` + 32 random bytes (URL-safe base64), shown once. The log and the ``api_tokens``
projection keep only its sha256 (a token has 256 bits of entropy, so a fast hash is enough: nothing
is guessed from it). Scopes are ordered: ``read`` < ``write`` < ``admin``, each including the ones
before it. A token may be limited to some collections (``--collection``): it then sees nothing of the
others, as if they did not exist (app/services/visibility.py). ``CHRONOS_API_TOKENS`` stays as the
bootstrap: those tokens are ``admin`` over every collection.

Every request's principal becomes the ``actor`` of the events it appends (``token:<token_id>``;
``token:env:<first 8 hex of its sha256>`` for a bootstrap token), so the log says who asked for what.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.ids import token_stream
from app.errors import InvalidRequest, NotFound
from events.log import EventLog
from events.sqlfiles import query
from events.store import NO_STREAM, EventStore

PREFIX = "chr_"
CACHE_S = 5.0  # a revoked token stops working within this long in a running server
_RANK = {scope: i for i, scope in enumerate(ev.SCOPES)}


@dataclass(frozen=True)
class Principal:
    """Who a request is: a token's id, name, scope and collections (None: all)."""

    token_id: str
    name: str
    scope: ev.Scope
    collections: tuple[str, ...] | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"

    def allows(self, needed: ev.Scope) -> bool:
        return _RANK[self.scope] >= _RANK[needed]

    @property
    def restricted(self) -> bool:
        """Limited to some collections (a token made with ``--collection``)."""
        return self.collections is not None

    def sees(self, collection: str) -> bool:
        """May this principal see documents of ``collection``? (app/services/visibility.py uses it.)"""
        return self.collections is None or collection in self.collections


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bootstrap_principal(presented: str, tokens: tuple[str, ...]) -> Principal | None:
    """An admin principal when ``presented`` is one of CHRONOS_API_TOKENS (constant-time compare):
    every collection, like any token made without ``--collection``."""
    given = presented.encode()
    match: str | None = None
    for token in tokens:
        if hmac.compare_digest(given, token.encode()):
            match = token
    if match is None:
        return None
    return Principal(token_id=f"env:{token_sha256(match)[:8]}", name="CHRONOS_API_TOKENS", scope="admin")


class TokenCache:
    """Token lookups of a running server, kept ``CACHE_S`` seconds (hits and misses alike)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, Principal | None]] = {}

    async def lookup(self, pool: asyncpg.Pool, presented: str) -> Principal | None:
        digest = token_sha256(presented)
        now = time.monotonic()
        cached = self._seen.get(digest)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        principal = await lookup(pool, presented)
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[digest] = (now, principal)
        return principal


async def lookup(pool: asyncpg.Pool, presented: str) -> Principal | None:
    """The principal of a stored, unrevoked token."""
    if not presented.startswith(PREFIX):
        return None
    row = await pool.fetchrow(query("tokens", "by_hash"), token_sha256(presented))
    if row is None or row["revoked_at"] is not None:
        return None
    collections = tuple(row["collections"]) if row["collections"] is not None else None
    return Principal(str(row["token_id"]), row["name"], row["scope"], collections)


async def create(
    store: EventLog, name: str, scope: str, *, actor: str, collections: list[str] | None = None
) -> tuple[str, str]:
    """A new token: returns (token_id, the token itself — shown once, never stored)."""
    if scope not in ev.SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(ev.SCOPES)}, not {scope!r}")
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise InvalidRequest("a token needs a name of 1..200 printable characters (who or what uses it)")
    collections = _collections(collections)
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = str(uuid.uuid4())
    created = ev.ApiTokenCreated(
        token_id=token_id, name=name, scope=scope,
        token_sha256=token_sha256(token), collections=collections,
    )  # fmt: skip
    await store.append(token_stream(token_id), [new_event(created, {"actor": actor})], NO_STREAM)
    return token_id, token


def _collections(names: list[str] | None) -> list[str] | None:
    """The token's collections, validated and without repeats (None or empty: every collection)."""
    if not names:
        return None
    from app.catalogue.collections import validate_collection_name

    for name in names:
        validate_collection_name(name)
    return list(dict.fromkeys(names))


async def revoke(store: EventStore, pool: asyncpg.Pool, token_id: str, *, actor: str, reason: str = "") -> bool:
    """Revoke a token; False when it was revoked already. NotFound for an unknown id."""
    try:
        tid = str(uuid.UUID(token_id))
    except ValueError:
        raise NotFound(f"{token_id!r} is not a token id (see `chronos tokens list`)") from None
    events = await store.read_stream_all(token_stream(tid))
    if not any(e.type == ev.ApiTokenCreated.TYPE for e in events):
        raise NotFound(f"no token {tid} (see `chronos tokens list`)")
    if any(e.type == ev.ApiTokenRevoked.TYPE for e in events):
        return False
    revoked = ev.ApiTokenRevoked(token_id=tid, reason=reason)
    await store.append(token_stream(tid), [new_event(revoked, {"actor": actor})], events[-1].stream_version)
    return True


async def listing(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [
        {
            "token_id": str(r["token_id"]),
            "name": r["name"],
            "scope": r["scope"],
            "collections": list(r["collections"]) if r["collections"] is not None else None,
            "created_at": r["created_at"].isoformat(),
            "created_by": r["created_by"],
            "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
            "revoke_reason": r["revoke_reason"],
        }
        for r in await pool.fetch(query("tokens", "list"))
    ]
