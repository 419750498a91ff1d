"""Directus as a changing source, against a stand-in that behaves like Directus 12 (tests/directus_standin.py):
"Replace file" is a new revision, files.delete deletes, a redelivered webhook is a no-op, 403 is worded
for what it means, a blank Flow body is explained, and a sync after an outage brings in what was missed
(and deletes what is gone, under the deletion guard)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from app.catalogue import events as ev
from app.catalogue.ids import document_id_for_key, stream_for
from app.runtime import Runtime
from app.services import directus as directus_service
from app.services.documents import document_states
from app.services.sync import DeletionGuard
from events.store import EventStore
from projections.runner import catch_up_all
from tests import directus_standin
from tests.api_support import AUTH, asgi_client
from tests.cli_support import Cli, cli_env

REPORT = b"# Quarterly report\n\nThe orchard delivered forty crates.\n"
REPORT_V2 = b"# Quarterly report\n\nThe orchard delivered fifty-two crates.\n"


@pytest.fixture
def directus() -> Iterator[directus_standin.Directus]:
    with directus_standin.running() as d:
        yield d


def doc_of(file_id: str) -> str:
    return str(document_id_for_key(f"directus:{file_id}"))


def settings_kw(directus: directus_standin.Directus) -> dict[str, str]:
    return {"directus_url": directus.url, "directus_token": directus_standin.TOKEN}


async def uploads(store: EventStore, file_id: str) -> list[dict[str, object]]:
    return [e.data for e in await store.read_stream(stream_for(doc_of(file_id))) if e.type == ev.DocumentUploaded.TYPE]


async def test_replace_delete_and_redelivery_through_the_webhook(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: directus_standin.Directus
) -> None:
    async with asgi_client(dsn, pool, store, **settings_kw(directus)) as (client, _app, _rt):
        hook = directus.upload("f-1", REPORT, "report.md")
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 202, r.text
        [first] = r.json()["documents"]
        assert first["document_id"] == doc_of("f-1") and first["revision"] == 1 and first["key"] == "directus:f-1"
        again = await client.post("/hooks/directus", json=hook, headers=AUTH)  # a proxy may redeliver
        assert again.status_code == 200 and again.json()["documents"][0]["created"] is False
        replaced = await client.post("/hooks/directus", json=directus.replace("f-1", REPORT_V2), headers=AUTH)
        assert replaced.status_code == 202 and replaced.json()["documents"][0]["revision"] == 2
        meta_only = await client.post("/hooks/directus", json=directus.update("f-1", title="Q3"), headers=AUTH)
        assert meta_only.status_code == 200 and meta_only.json()["documents"][0]["created"] is False
        assert [u["revision"] for u in await uploads(store, "f-1")] == [1, 2]
        gone = await client.post("/hooks/directus", json=directus.delete("f-1"), headers=AUTH)
        assert gone.status_code == 200 and gone.json()["deleted"] == [doc_of("f-1")]
        state = (await document_states(pool, [doc_of("f-1")]))[doc_of("f-1")]
        assert state.deleted


async def test_missing_files_and_blank_bodies_are_explained(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: directus_standin.Directus
) -> None:
    async with asgi_client(dsn, pool, store, **settings_kw(directus)) as (client, _app, _rt):
        body = {"event": "files.upload", "key": "never-there", "payload": {}, "collection": "directus_files"}
        r = await client.post("/hooks/directus", json=body, headers=AUTH)
        assert r.status_code == 502
        message = r.json()["error"]["message"]
        assert "missing, deleted, or the token lacks read permission on directus_files" in message
        assert "DIRECTUS_TOKEN" not in message  # 403 is not a refused token
        blank = await client.post("/hooks/directus", content=b"", headers={**AUTH,
                                  "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert blank.status_code == 422 and "{{$trigger}}" in blank.json()["error"]["message"]
    secret = directus.url.replace("http://", "http://admin:hunter2@")
    async with asgi_client(dsn, pool, store, directus_url=secret, directus_token="wrong") as (client, _app, _rt):
        r = await client.post("/hooks/directus", json=directus.upload("f-2", REPORT, "r.md"), headers=AUTH)
        assert r.status_code == 502 and "hunter2" not in r.text and "admin" not in r.text
        assert "refused DIRECTUS_TOKEN" in r.json()["error"]["message"]


async def test_a_sync_after_an_outage_brings_in_what_the_flow_missed(
    rt: Runtime, directus: directus_standin.Directus
) -> None:
    async with directus_service.DirectusClient(directus.url, directus_standin.TOKEN) as client:
        directus.upload("a", b"# A\n\nAlpha.\n", "a.md")
        directus.upload("b", b"# B\n\nBeta.\n", "b.md")
        first = await directus_service.sync(rt, client)
        assert sorted(first.uploaded) == ["a", "b"]
        # Chronos is down: the Flow's webhooks fail and Directus never retries them.
        directus.upload("c", b"# C\n\nGamma.\n", "c.md")
        directus.replace("a", b"# A\n\nAlpha, revised.\n")
        second = await directus_service.sync(rt, client)
        assert sorted(second.uploaded) == ["a", "c"] and second.unchanged == 0
        assert [u["revision"] for u in await uploads(rt.store, "a")] == [1, 2]
        third = await directus_service.sync(rt, client)  # nothing changed: nothing happens
        assert (third.uploaded, third.deleted) == ([], [])
        # One of three deleted in Directus: more than 15 %, refused unless forced.
        directus.delete("b")
        directus.upload("d", b"# D\n\nDelta.\n", "d.md")
        with pytest.raises(DeletionGuard, match="would delete 1 of the 3"):
            await directus_service.sync(rt, client)  # d is taken in all the same
        plan = await directus_service.sync(rt, client, dry_run=True)
        assert plan.plan is not None and list(plan.plan.vanished) == ["directus:b"]
        forced = await directus_service.sync(rt, client, force=True)
        assert forced.deleted == ["b"]
    await catch_up_all(rt.pool, rt.dsn)
    states = await document_states(rt.pool, [doc_of(x) for x in "abcd"])
    assert {k: s.status.value for k, s in states.items()} == {
        doc_of("a"): "uploaded",
        doc_of("b"): "deleted",
        doc_of("c"): "uploaded",
        doc_of("d"): "uploaded",
    }
    synced = [e for e in await rt.store.read_stream("sync-directus") if e.type == ev.SourceSynced.TYPE]
    assert [(e.data["uploaded"], e.data["deleted"]) for e in synced] == [(2, 0), (2, 0), (0, 0), (1, 0), (0, 1)]


@pytest.fixture
def rt(dsn: str, pool: asyncpg.Pool, store: EventStore) -> Runtime:
    from app.config import Settings
    from events import PgBlobStore

    return Runtime(Settings(database_url=dsn), dsn, pool, store, PgBlobStore(pool))


async def test_chronos_sync_directus_and_the_periodic_sync_under_serve(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: directus_standin.Directus
) -> None:
    """The CLI plans (--dry-run changes nothing) and syncs; a server with the projections running syncs
    by itself, so a file uploaded while no webhook reached Chronos gets in without anyone asking."""
    env = cli_env(DATABASE_URL=dsn, DIRECTUS_URL=directus.url, DIRECTUS_TOKEN=directus_standin.TOKEN)
    cli = Cli(env)
    directus.upload("a", b"# A\n\nAlpha.\n", "a.md")
    plan = await cli("sync", "directus", "--dry-run")
    assert "would upload 1 new" in plan.out and "new      directus:a" in plan.out
    assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'DocumentUploaded'") == 0
    done = await cli.json("sync", "directus")
    assert isinstance(done, dict) and done["uploaded"] == ["a"]
    broken = await Cli(cli_env(DATABASE_URL=dsn))("sync", "directus", ok=False)
    assert broken.code == 2 and "set DIRECTUS_URL and DIRECTUS_TOKEN" in broken.err and "Traceback" not in broken.err
    directus.upload("b", b"# B\n\nBeta.\n", "b.md")
    kw = {**settings_kw(directus), "directus_sync_s": 0.2}
    async with asgi_client(dsn, pool, store, run_projections=True, **kw) as (_client, _app, _rt):
        for _ in range(200):
            if await pool.fetchval("SELECT count(*) FROM events WHERE type = 'DocumentUploaded'") == 2:
                break
            await asyncio.sleep(0.05)
    assert (await uploads(store, "b"))[0]["source_ref"] == "b"
