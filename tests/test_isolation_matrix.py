"""The isolation matrix (issue 15): every route of the Starlette app, called with tokens of collection
``alpha`` against ``bravo``'s documents, events, search hits and spend, answers as if bravo did not
exist (404 with the very body of an absent id, or results without a trace of bravo), and with alpha's
own resources answers as usual. Against a real uvicorn server with the projections running.

The routes are read from ``app.routes``: a route that no case covers fails
``test_every_route_is_in_the_matrix``, so a new route cannot be forgotten. The CLI takes no API token
(it is the operator's, on the database itself), so there is no CLI path to cover here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import numpy as np
import orjson
from starlette.routing import Mount, Route

from app.api import create_app
from app.catalogue import events as ev
from app.catalogue.ids import stream_for
from app.config import Settings
from app.runtime import Runtime
from app.services import collections, tokens
from events.blobs import PgBlobStore
from events.store import EventStore
from events.subscription import Subscription
from events.types import NewEvent
from projections.collections import CollectionsProjector
from projections.runner import catch_up_all
from projections.tokens import TokensProjector
from tests.api_support import AUTH, fake_chunking, fake_conversion, fake_cost, server_thread, settings_for, wait_until

ALPHA, BRAVO, NOWHERE = "alpha", "bravo", "nowhere-at-all"
WORD = "lantern"
A_USD, B_USD = 0.1234, 0.4321
TIMEOUT = httpx.Timeout(60.0)


@dataclass
class World:
    """What the matrix runs against: alpha's and bravo's documents and tokens."""

    client: httpx.AsyncClient
    pool: asyncpg.Pool
    a_doc: str  # alpha, searchable, with a cost
    a_spare: str  # alpha, deleted by alpha's admin token during the run
    b_doc: str  # bravo, searchable, with a cost
    b_deleted: str  # bravo, deleted: stays invisible to alpha
    read: dict[str, str]  # alpha's tokens
    write: dict[str, str]
    admin: dict[str, str]
    missing: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def bravo_ids(self) -> list[str]:
        return [self.b_doc, self.b_deleted]


Case = Callable[[World], Awaitable[None]]


def inventory() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD aside: Starlette adds it to every GET)."""
    app = create_app(Settings(database_url="postgresql://unused/none"))
    out: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Route):
            out |= {(m, route.path) for m in (route.methods or set()) - {"HEAD"}}
        elif isinstance(route, Mount):
            out.add(("GET", f"{route.path}/{{path}}"))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return out


def _body(r: httpx.Response) -> Any:
    return r.json() if "json" in r.headers.get("content-type", "") else r.text


def same_as_absent(r: httpx.Response, absent: httpx.Response, hidden: str = "", shown: str = "") -> None:
    """``r`` (for something of bravo) is the answer for something that does not exist, word for word
    once the ids are swapped."""
    assert r.status_code == 404 == absent.status_code, (r.status_code, r.text, absent.text)
    assert r.text.replace(hidden, shown) == absent.text, (r.text, absent.text)


def no_trace_of_bravo(w: World, r: httpx.Response) -> None:
    text = r.text
    for marker in [*w.bravo_ids, BRAVO, "bravo-secret.md"]:
        assert marker not in text, f"{r.request.method} {r.request.url.path}: {marker!r} is in {text[:300]}"


# --- the document routes: one rule for all of them ------------------------------------------------------


async def document_route(w: World, method: str, template: str, own_status: int, **kw: Any) -> None:
    """Bravo's documents (also a deleted one) are absent for every alpha token, even one whose scope is too
    low (404 before any 403); alpha's own answer ``own_status``."""
    c = w.client
    path = template.replace("{document_id}", "%s")
    absent = await c.request(method, path % w.missing, headers=w.admin, **kw)
    assert absent.status_code == 404, absent.text
    for doc in w.bravo_ids:
        for headers in (w.read, w.write, w.admin):
            same_as_absent(await c.request(method, path % doc, headers=headers, **kw), absent, doc, w.missing)
    own = w.a_spare if method == "DELETE" else w.a_doc
    r = await c.request(method, path % own, headers=w.admin, **kw)
    assert r.status_code == own_status, (method, path, r.text)
    no_trace_of_bravo(w, r)
    root = w.b_deleted if method == "DELETE" else w.b_doc  # (bravo's live document stays for the other cases)
    r = await c.request(method, path % root, headers=AUTH, **kw)  # the bootstrap token sees bravo
    assert r.status_code == own_status, (method, path, r.text)


def doc_case(method: str, template: str, own_status: int, **kw: Any) -> Case:
    async def case(w: World) -> None:
        await document_route(w, method, template, own_status, **kw)

    return case


# --- the other routes -------------------------------------------------------------------------------------


async def upload_case(w: World) -> None:
    c = w.client
    md = b"# Alpha upload\n\nA lantern of alpha.\n"
    hdr = {**w.write, "X-Filename": "alpha-up.md"}
    absent = await c.post("/documents", params={"collection": NOWHERE}, content=md, headers=hdr)
    same_as_absent(await c.post("/documents", params={"collection": BRAVO}, content=md, headers=hdr), absent, BRAVO,
                   NOWHERE)  # fmt: skip
    r = await c.post("/documents", content=md, headers=hdr)  # no collection: the token's only one
    assert r.status_code == 202, r.text
    row = (await c.get(f"/documents/{r.json()['document_id']}", headers=AUTH)).json()
    assert row["collection"] == ALPHA, row
    r = await c.post("/documents", params={"collection": ALPHA}, content=b"# second\n\nother\n", headers=hdr)
    assert r.status_code == 202, r.text


async def list_case(w: World) -> None:
    c = w.client
    r = await c.get("/documents", params={"limit": 500}, headers=w.read)
    assert r.status_code == 200, r.text
    ids = {d["document_id"] for d in r.json()["documents"]}
    assert w.a_doc in ids and not ids & set(w.bravo_ids), ids
    no_trace_of_bravo(w, r)
    absent = await c.get("/documents", params={"collection": NOWHERE}, headers=w.read)
    same_as_absent(await c.get("/documents", params={"collection": BRAVO}, headers=w.read), absent, BRAVO, NOWHERE)
    r = await c.get("/documents", params={"limit": 500}, headers=AUTH)
    assert {w.a_doc, *w.bravo_ids} <= {d["document_id"] for d in r.json()["documents"]}


async def events_case(w: World) -> None:
    c = w.client
    r = await c.get("/events", params={"after": "0", "limit": 1000}, headers=w.read)
    assert r.status_code == 200, r.text
    streams = {e["stream_id"] for e in r.json()["events"]}
    assert stream_for(w.a_doc) in streams, streams
    assert all(alphas(w, s) for s in streams), streams  # no bravo, no token streams
    no_trace_of_bravo(w, r)
    everything = {e["stream_id"] for e in (await c.get("/events", params={"after": "0", "limit": 1000},
                                                         headers=AUTH)).json()["events"]}  # fmt: skip
    assert stream_for(w.b_doc) in everything


def alphas(w: World, stream_id: str) -> bool:
    """A stream alpha may see: a document stream that is not bravo's, or alpha's collection stream."""
    if stream_id.startswith("document-"):
        return stream_id.removeprefix("document-") not in w.bravo_ids
    return stream_id == f"collection-{ALPHA}"


async def sse_case(w: World) -> None:
    """The live tail from the start of the log: everything already there is sent before the first
    heartbeat; none of it is bravo's."""
    seen: list[dict[str, Any]] = []
    async with w.client.stream("GET", "/events/stream", params={"after": "0"}, headers=w.read) as r:
        assert r.status_code == 200
        data: list[str] = []
        async with asyncio.timeout(60):
            async for line in r.aiter_lines():
                if line.startswith(": heartbeat"):
                    break
                if line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and data:
                    seen.append(orjson.loads("\n".join(data)))
                    data = []
    streams = {e["stream_id"] for e in seen}
    assert stream_for(w.a_doc) in streams, streams
    assert all(alphas(w, s) for s in streams), streams
    assert not any(marker in orjson.dumps(seen).decode() for marker in w.bravo_ids)


async def search_case(w: World) -> None:
    c = w.client
    # The DELETE case deleted a_spare: its DocumentDeleted is committed, the server's projections apply
    # it a moment later (search reads the projections). Bring them to the head before asking.
    await catch_up_all(w.pool)
    q: dict[str, str | int] = {"q": WORD, "mode": "text", "k": 20}
    r = await c.get("/search", params=q, headers=w.read)
    assert r.status_code == 200, r.text
    docs = {h["document_id"] for h in r.json()["hits"]}
    assert docs == {w.a_doc}, r.json()
    no_trace_of_bravo(w, r)
    absent = await c.get("/search", params={**q, "collection": NOWHERE}, headers=w.read)
    same_as_absent(await c.get("/search", params={**q, "collection": BRAVO}, headers=w.read), absent, BRAVO, NOWHERE)
    everything = {h["document_id"] for h in (await c.get("/search", params=q, headers=AUTH)).json()["hits"]}
    assert {w.a_doc, w.b_doc} <= everything  # the word is in bravo's chunks too


async def costs_case(w: World) -> None:
    c = w.client
    r = await c.get("/costs", headers=w.read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert abs(body["total_usd"] - A_USD) < 1e-9, body
    assert [x["collection"] for x in body["collections"]] == [ALPHA], body
    no_trace_of_bravo(w, r)
    absent = await c.get("/costs", params={"collection": NOWHERE}, headers=w.read)
    same_as_absent(await c.get("/costs", params={"collection": BRAVO}, headers=w.read), absent, BRAVO, NOWHERE)
    r = await c.get("/costs", params={"collection": ALPHA}, headers=w.read)
    assert r.status_code == 200 and abs(r.json()["total_usd"] - A_USD) < 1e-9, r.text
    root = (await c.get("/costs", params={"collection": BRAVO}, headers=AUTH)).json()
    assert abs(root["total_usd"] - B_USD) < 1e-9, root


async def metrics_case(w: World) -> None:
    """Service-wide figures: a collection token gets the 404 of a route that does not exist."""
    absent = await w.client.get("/no-such-route", headers=w.read)
    same_as_absent(await w.client.get("/metrics", headers=w.read), absent)
    assert (await w.client.get("/metrics", headers=AUTH)).status_code == 200


def public_case(path: str, statuses: tuple[int, ...] = (200,)) -> Case:
    """Health, the OpenAPI document and the dashboard's files: the same for everyone, no documents in them."""

    async def case(w: World) -> None:
        r = await w.client.get(path, headers=w.read)
        assert r.status_code in statuses, (path, r.status_code, r.text[:200])
        no_trace_of_bravo(w, r)

    return case


async def directus_case(w: World) -> None:
    """Directus's folders decide the collection and a files.delete deletes wherever the file's document
    is: the hook is for tokens of every collection; a limited one gets the 404 of a route that does not
    exist."""
    trigger = {"event": "items.create", "collection": "other"}
    absent = await w.client.post("/no-such-route", json=trigger, headers=w.write)
    same_as_absent(await w.client.post("/hooks/directus", json=trigger, headers=w.write), absent)
    r = await w.client.post("/hooks/directus", json=trigger, headers=AUTH)
    assert r.status_code == 200 and r.json()["ignored"] is True, r.text


async def collections_case(w: World) -> None:
    r = await w.client.get("/collections", headers=w.read)
    assert r.status_code == 200 and [c["name"] for c in r.json()["collections"]] == [ALPHA], r.text
    everything = {c["name"] for c in (await w.client.get("/collections", headers=AUTH)).json()["collections"]}
    assert {ALPHA, BRAVO, "default"} <= everything


async def create_collection_case(w: World) -> None:
    """Creating is for tokens of every collection (a 409 for a taken name would confirm it exists)."""
    absent = await w.client.post("/no-such-route", json={"name": BRAVO}, headers=w.admin)
    same_as_absent(await w.client.post("/collections", json={"name": BRAVO}, headers=w.admin), absent)
    same_as_absent(await w.client.post("/collections", json={"name": "charlie"}, headers=w.admin), absent)
    await w.client.post("/collections", json={"name": "charlie"}, headers=AUTH)
    # (its answer can be a 500 while the server's own projection holds the collections checkpoint: a
    # race in POST /collections reported to the lead; what matters here is that the token may create)
    assert await w.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'collection-charlie'") == 1


async def collection_stats_case(w: World) -> None:
    c = w.client
    absent = await c.get(f"/collections/{NOWHERE}/stats", headers=w.read)
    same_as_absent(await c.get(f"/collections/{BRAVO}/stats", headers=w.read), absent, BRAVO, NOWHERE)
    r = await c.get(f"/collections/{ALPHA}/stats", headers=w.read)
    assert r.status_code == 200, r.text
    no_trace_of_bravo(w, r)
    assert (await c.get(f"/collections/{BRAVO}/stats", headers=AUTH)).status_code == 200


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/documents"): upload_case,
    ("GET", "/documents"): list_case,
    ("GET", "/documents/{document_id}"): doc_case("GET", "/documents/{document_id}", 200),
    ("GET", "/documents/{document_id}/events"): doc_case("GET", "/documents/{document_id}/events", 200),
    ("GET", "/documents/{document_id}/revisions"): doc_case("GET", "/documents/{document_id}/revisions", 200),
    ("GET", "/documents/{document_id}/markdown"): doc_case("GET", "/documents/{document_id}/markdown", 200),
    ("GET", "/documents/{document_id}/chunks"): doc_case("GET", "/documents/{document_id}/chunks", 200),
    ("POST", "/documents/{document_id}/reprocess"): doc_case(
        "POST", "/documents/{document_id}/reprocess", 202, json={"stage": "chunk"}
    ),
    ("DELETE", "/documents/{document_id}"): doc_case("DELETE", "/documents/{document_id}", 200),
    ("PATCH", "/documents/{document_id}/metadata"): doc_case(
        "PATCH", "/documents/{document_id}/metadata", 200, json={"team": "alpha-team"}
    ),
    ("GET", "/collections"): collections_case,
    ("POST", "/collections"): create_collection_case,
    ("GET", "/collections/{collection}/stats"): collection_stats_case,
    ("GET", "/events"): events_case,
    ("GET", "/events/stream"): sse_case,
    ("GET", "/search"): search_case,
    ("GET", "/costs"): costs_case,
    ("GET", "/metrics"): metrics_case,
    ("POST", "/hooks/directus"): directus_case,
    ("GET", "/healthz"): public_case("/healthz"),
    ("GET", "/readyz"): public_case("/readyz", (200, 503)),
    ("GET", "/openapi.json"): public_case("/openapi.json"),
    ("GET", "/"): public_case("/"),
    ("GET", "/static/{path}"): public_case("/static/dashboard.js"),
}


def test_every_route_is_in_the_matrix() -> None:
    routes = inventory()
    assert not routes - set(CASES), f"routes the isolation matrix does not cover: {sorted(routes - set(CASES))}"
    assert not set(CASES) - routes, f"cases for routes that no longer exist: {sorted(set(CASES) - routes)}"


# --- the world ------------------------------------------------------------------------------------------------


async def _token(store: EventStore, scope: str) -> dict[str, str]:
    _id, token = await tokens.create(store, f"alpha-{scope}", scope, actor="test", collections=[ALPHA])
    return {"Authorization": f"Bearer {token}"}


async def _embedded(rt: Runtime, document_id: str, chunk_set_id: str, chunks: int) -> None:
    vectors = np.zeros((chunks, 384), dtype=np.float32)
    vectors[:, 0] = 1.0
    ref = await rt.blobs.put_bytes(vectors.tobytes(), "application/x-float32")
    data = {"document_id": document_id, "chunk_set_id": chunk_set_id, "model": "local:all-MiniLM-L6-v2",
            "provider": "local", "dimensions": 384, "chunk_count": chunks,
            "vectors": {"sha256": ref.sha256, "size": ref.size, "media_type": "application/x-float32"}}  # fmt: skip
    await rt.store.append(stream_for(document_id), [NewEvent(ev.ChunksEmbedded.TYPE, data)])


async def _document(client: httpx.AsyncClient, rt: Runtime, collection: str, name: str, usd: float) -> str:
    text = f"# {name}\n\nThe {WORD} of {collection}: {name}.\n"
    r = await client.post("/documents", params={"collection": collection}, content=text.encode(),
                          headers={**AUTH, "X-Filename": name})  # fmt: skip
    assert r.status_code == 202, r.text
    doc = str(r.json()["document_id"])
    conversion = await fake_conversion(rt, doc, text)
    chunk_set = await fake_chunking(rt, doc, conversion, [f"The {WORD} of {collection}.", f"{name} itself."])
    await _embedded(rt, doc, chunk_set, 2)
    await fake_cost(rt, doc, usd)
    return doc


async def test_the_isolation_matrix(dsn: str, pool: asyncpg.Pool, store: EventStore) -> None:
    """Every route, alpha's tokens against bravo's resources and against alpha's own."""
    settings = settings_for(dsn, api_read_auth=True, sse_heartbeat_s=0.5)
    rt = Runtime(settings, dsn, pool, store, PgBlobStore(pool))
    read, write, admin = [await _token(store, s) for s in ("read", "write", "admin")]
    projector = TokensProjector()
    await Subscription(store, projector.subscription, projector.apply).catch_up()
    for name in (ALPHA, BRAVO):
        await collections.create(store, name, actor="test")
    await collections.catch_up(store, CollectionsProjector())
    with server_thread(settings, run_projections=True) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
            a_doc = await _document(client, rt, ALPHA, "alpha-one.md", A_USD)
            a_spare = await _document(client, rt, ALPHA, "alpha-spare.md", 0.0)
            b_doc = await _document(client, rt, BRAVO, "bravo-secret.md", B_USD)
            b_deleted = await _document(client, rt, BRAVO, "bravo-gone.md", 0.0)
            r = await client.request("DELETE", f"/documents/{b_deleted}", headers=AUTH)
            assert r.status_code == 200, r.text

            async def settled() -> bool:
                await catch_up_all(pool)
                rows = await pool.fetch("SELECT document_id, status FROM documents")
                status = {str(r["document_id"]): r["status"] for r in rows}
                return status.get(b_deleted) == "deleted" and all(
                    status.get(d) == "searchable" for d in (a_doc, a_spare, b_doc)
                )

            await wait_until(settled)
            world = World(client, pool, a_doc, a_spare, b_doc, b_deleted, read, write, admin)
            failures = []
            for (method, path), case in CASES.items():
                try:
                    await case(world)
                except AssertionError as exc:
                    failures.append(f"{method} {path}: {exc}")
            assert not failures, "\n".join(failures)
