"""Bearer-token auth: every write refused without/with a wrong token (and nothing appended), reads
open unless CHRONOS_API_READ_AUTH, health checks always open, every route classified."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from starlette.routing import Mount, Route

from app.api import create_app
from app.api.auth import token_ok
from app.config import Settings
from events.store import EventStore
from tests.api_support import AUTH, TOKEN, asgi_client, event_count

DOC = "00000000-0000-0000-0000-000000000042"
WRITES = [
    ("POST", "/documents"),
    ("POST", f"/documents/{DOC}/reprocess"),
    ("DELETE", f"/documents/{DOC}"),
    ("PATCH", f"/documents/{DOC}/metadata"),
    ("POST", "/collections"),
    ("POST", "/hooks/directus"),
]
ADMIN = {("DELETE", "/documents/{document_id}"), ("POST", "/collections")}  # deleting, and making collections
READS = [
    "/documents",
    f"/documents/{DOC}",
    f"/documents/{DOC}/events",
    f"/documents/{DOC}/markdown",
    f"/documents/{DOC}/chunks",
    "/events",
    "/search?q=x",
    "/costs",
    "/metrics",
]
MD = b"# Secret plans\n\nNothing to see.\n"


def test_every_route_is_classified_and_writes_are_the_known_ones() -> None:
    app = create_app(Settings(api_tokens=(TOKEN,)))
    writes = set()
    for route in app.routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        access = getattr(route.endpoint, "chronos_access", None)
        assert access in ("read", "write", "admin", "public"), f"{route.path} is not marked read/write/admin/public"
        if access in ("write", "admin"):
            writes |= {(m, route.path) for m in route.methods or ()}
        else:
            assert route.methods is not None and route.methods <= {"GET", "HEAD"}, route.path
        if access == "admin":
            assert {(m, route.path) for m in route.methods or ()} <= ADMIN, route.path
    expected = {(m, p.replace(DOC, "{document_id}")) for m, p in WRITES}
    assert writes == expected


def test_token_compare() -> None:
    assert token_ok("abc", ("x", "abc")) and not token_ok("ab", ("abc",)) and not token_ok("", ("abc",))
    assert not token_ok("abc", ())


async def _attempt(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    if path == "/documents":
        return await client.request(method, path, content=MD, headers={**headers, "X-Filename": "a.md"})
    if path == "/hooks/directus":
        return await client.request(method, path, json={"event": "files.upload", "key": "abc"}, headers=headers)
    return await client.request(method, path, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": TOKEN},
    ],
)
async def test_writes_refused_without_valid_token(
    dsn: str, pool: asyncpg.Pool, store: EventStore, headers: dict[str, str]
) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        doc = (await client.post("/documents", content=MD + b"!", headers={**AUTH, "X-Filename": "x.md"})).json()
        writes = [(m, p.replace(DOC, doc["document_id"])) for m, p in WRITES]
        before = await event_count(pool)
        for method, path in writes:
            r = await _attempt(client, method, path, headers)
            assert r.status_code in (401, 403), (method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] in ("unauthorized", "forbidden")
            if r.status_code == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
        assert await event_count(pool) == before
        assert await pool.fetchval("SELECT count(*) FROM blobs") == 1  # only the setup upload's bytes


async def test_no_tokens_configured_refuses_writes(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store, api_tokens=()) as (client, _app, _rt):
        r = await client.post("/documents", content=MD, headers={"X-Filename": "a.md", "Authorization": "Bearer "})
        assert r.status_code == 401 and "CHRONOS_API_TOKENS" in r.json()["error"]["message"]
        assert (await client.get("/documents")).status_code == 200
        assert await event_count(pool) == 0


async def test_read_auth(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store, api_read_auth=True) as (client, _app, _rt):
        for path in READS:
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers={"Authorization": "Bearer nope"})).status_code == 403, path
            assert (await client.get(path, headers=AUTH)).status_code in (200, 404), path
        assert (await client.get("/events/stream")).status_code == 401
        for open_path in ("/healthz", "/openapi.json", "/"):
            assert (await client.get(open_path)).status_code == 200, open_path
        assert (await client.get("/readyz")).status_code in (200, 503)
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        assert (await client.get("/documents")).status_code == 200
