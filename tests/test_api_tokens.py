"""Scoped API tokens: read < write < admin, stored hashed, managed by `chronos tokens`, revocable,
and every request's token recorded as the actor of what it appends (issue: any token could delete
documents and spend money)."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from app.api import create_app
from app.config import Settings
from app.services import tokens
from events.store import EventStore
from events.subscription import Subscription
from projections.tokens import TokensProjector
from tests.api_support import AUTH, TOKEN, asgi_client, fake_chunking, fake_conversion
from tests.cli_support import Cli, cli_env

MD = b"# Tokens\n\nWho may do what.\n"


async def make(store: EventStore, dsn: str, scope: str) -> tuple[str, dict[str, str]]:
    token_id, token = await tokens.create(store, f"{scope}-user", scope, actor="test")
    projector = TokensProjector()
    await Subscription(store, projector.subscription, projector.apply).catch_up()
    return token_id, {"Authorization": f"Bearer {token}"}


async def actors(store: EventStore, doc: str) -> list[tuple[str, str]]:
    return [(e.type, e.metadata.get("actor", "")) for e in await store.read_stream(f"document-{doc}")]


async def test_scopes_decide_what_a_token_may_do(dsn: str, pool: object, store: EventStore) -> None:
    read_id, read = await make(store, dsn, "read")
    write_id, write = await make(store, dsn, "write")
    admin_id, admin = await make(store, dsn, "admin")
    async with asgi_client(dsn, pool, store, api_read_auth=True) as (client, _app, rt):  # type: ignore[arg-type]
        assert (await client.get("/documents", headers=read)).status_code == 200
        r = await client.post("/documents", content=MD, headers={**read, "X-Filename": "t.md"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        r = await client.post("/documents", content=MD, headers={**write, "X-Filename": "t.md"})
        assert r.status_code == 202, r.text
        doc = r.json()["document_id"]
        assert (await actors(store, doc)) == [("DocumentUploaded", f"token:{write_id}")]
        conversion = await fake_conversion(rt, doc, "# Tokens\n\nWho may do what.\n")
        await fake_chunking(rt, doc, conversion, ["Who may do what."])
        # A free re-run is a write; a paid one (a GPU conversion) and a delete need admin.
        r = await client.post(f"/documents/{doc}/reprocess", json={"stage": "chunk"}, headers=write)
        assert r.status_code == 202, r.text
        r = await client.post(f"/documents/{doc}/reprocess", json={"stage": "convert", "backend": "modal"},
                              headers=write)  # fmt: skip
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        r = await client.request("DELETE", f"/documents/{doc}", headers=write)
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        r = await client.request("DELETE", f"/documents/{doc}", headers=admin)
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert (await actors(store, doc))[-1] == ("DocumentDeleted", f"token:{admin_id}")
        assert ("ChunkingRequested", f"token:{write_id}") in await actors(store, doc)
    assert read_id != write_id


async def test_bootstrap_tokens_are_admin_and_named(dsn: str, pool: object, store: EventStore) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):  # type: ignore[arg-type]
        doc = (await client.post("/documents", content=MD, headers={**AUTH, "X-Filename": "t.md"})).json()
        r = await client.request("DELETE", f"/documents/{doc['document_id']}", headers=AUTH)
        assert r.status_code == 200
        expected = f"token:env:{tokens.token_sha256(TOKEN)[:8]}"
        assert {a for _, a in await actors(store, doc["document_id"])} == {expected}


async def test_a_revoked_token_stops_working_and_only_hashes_are_stored(
    dsn: str, pool: object, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "CACHE_S", 0.0)
    token_id, write = await make(store, dsn, "write")
    token = write["Authorization"].split()[1]
    async with asgi_client(dsn, pool, store) as (client, _app, rt):  # type: ignore[arg-type]
        assert (await client.post("/documents", content=MD, headers={**write, "X-Filename": "t.md"})).status_code == 202
        assert await tokens.revoke(store, rt.pool, token_id, actor="test") is True
        assert await tokens.revoke(store, rt.pool, token_id, actor="test") is False
        projector = TokensProjector()
        await Subscription(store, projector.subscription, projector.apply).catch_up()
        r = await client.post("/documents", content=MD + b"2", headers={**write, "X-Filename": "t.md"})
        assert r.status_code == 403 and "revoked" in r.json()["error"]["message"]
        logged = await rt.pool.fetchval("SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'", token)
        stored = await rt.pool.fetchval(
            "SELECT count(*) FROM api_tokens WHERE token_sha256 = $1", tokens.token_sha256(token)
        )
        assert (logged, stored) == (0, 1)


def test_routes_that_delete_need_admin() -> None:
    app = create_app(Settings(api_tokens=(TOKEN,)))
    admin = {(m, r.path) for r in app.routes if isinstance(r, Route)
             and getattr(r.endpoint, "chronos_access", None) == "admin" for m in r.methods or ()}  # fmt: skip
    assert admin == {("DELETE", "/documents/{document_id}"), ("POST", "/collections")}


async def test_cli_creates_lists_and_revokes(dsn: str, tmp_path: object) -> None:
    cli = Cli(cli_env(DATABASE_URL=dsn))
    made = (await cli("tokens", "create", "directus-flow", "--scope", "write", "--json")).json()
    assert made["token"].startswith("chr_") and made["scope"] == "write"
    listed = (await cli("tokens", "list", "--json")).json()
    assert [t["token_id"] for t in listed] == [made["token_id"]] and "token" not in listed[0]
    assert made["token"] not in (await cli("tokens", "list")).out
    assert (await cli("tokens", "revoke", made["token_id"], "--json")).json()["revoked"] is True
    assert (await cli("tokens", "list", "--json")).json()[0]["revoked_at"] is not None
    bad = await cli("tokens", "create", "x", "--scope", "root", ok=False)
    assert bad.code == 2 and "invalid choice" in bad.err
    missing = await cli("tokens", "revoke", "00000000-0000-0000-0000-000000000000", ok=False)
    assert missing.code == 3 and "no token" in missing.err and "Traceback" not in missing.err
