"""Directus files into collections (tests/directus_standin.py): a file's folder name (or a configured file
field) picks its collection, its title/description/tags/folder are its metadata, and an edit of those in
Directus (``files.update``, same bytes) records a ``DocumentMetadataUpdated`` and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.ids import collection_stream, document_id_for_key, stream_for
from app.services import directus as service
from events.store import EventStore
from projections.runner import catch_up_all
from tests import directus_standin
from tests.api_support import AUTH, asgi_client

FILE_ID = "4f5a8c2e-1b3d-4e6f-8a9b-0c1d2e3f4a5b"
OTHER_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
CONTENT = b"# Quarterly report\n\nThe orchard delivered forty crates.\n"


@pytest.fixture
def directus() -> Iterator[directus_standin.Directus]:
    with directus_standin.running() as d:
        yield d


async def make_collection(store: EventStore, name: str) -> None:
    await store.append(collection_stream(name), [new_event(ev.CollectionCreated(name=name), {"actor": "test"})])


async def test_folder_name_is_the_collection_and_a_metadata_edit_records_only_metadata(
    dsn: str,
    pool: asyncpg.Pool,
    store: EventStore,
    directus: directus_standin.Directus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_collection(store, "finance")
    finance = directus.folder("f0000000-0000-4000-8000-000000000001", "finance")
    elsewhere = directus.folder("f0000000-0000-4000-8000-000000000002", "Marketing Assets")
    hook = directus.upload(FILE_ID, CONTENT, "q3.md", title="Q3 report", tags=["q3", "board"], folder=finance)
    other = directus.upload(OTHER_ID, CONTENT, "flyer.md", folder=elsewhere)
    settings = {"directus_url": directus.url, "directus_token": directus_standin.TOKEN}
    async with asgi_client(dsn, pool, store, **settings) as (client, _, rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.status_code == 202, r.text
        (doc,) = r.json()["documents"]
        assert doc["collection"] == "finance"
        assert doc["document_id"] == str(document_id_for_key(f"directus:{FILE_ID}", "finance"))
        uploaded = (await store.read_stream(stream_for(doc["document_id"])))[0]
        assert (uploaded.data["collection"], uploaded.data["metadata"]) == (
            "finance", {"title": "Q3 report", "description": None, "tags": ["q3", "board"], "folder": "finance"},
        )  # fmt: skip
        # A folder that names no collection: the default collection, and a log line saying so.
        r = await client.post("/hooks/directus", json=other, headers=AUTH)
        assert r.json()["documents"][0]["collection"] == "default"
        assert any("is not a collection" in m and OTHER_ID in m for m in caplog.messages)

        # A metadata-only edit in Directus: same bytes, new fields.
        position = await pool.fetchval("SELECT max(position) FROM events")
        edit = directus.update(FILE_ID, description="Board pack", tags=["q3"])
        r = await client.post("/hooks/directus", json=edit, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["documents"][0]["metadata_updated"] is True
        added = await pool.fetch("SELECT type, data FROM events WHERE position > $1", position)
        assert [a["type"] for a in added] == ["DocumentMetadataUpdated"]
        await catch_up_all(pool, dsn)
        row = await pool.fetchrow("SELECT collection, metadata, revision FROM documents WHERE document_id = $1",
                                  doc["document_id"])  # fmt: skip
        assert row is not None and (row["collection"], row["revision"]) == ("finance", 1)
        assert row["metadata"] == {
            "title": "Q3 report",
            "description": "Board pack",
            "tags": ["q3"],
            "folder": "finance",
        }
        # The same webhook again records nothing.
        await client.post("/hooks/directus", json=edit, headers=AUTH)
        assert await pool.fetchval("SELECT count(*) FROM events WHERE position > $1", position) == 1

        # Moved to a folder whose collection exists now: a document there, the old one deleted.
        await make_collection(store, "marketing")
        directus.folder("f0000000-0000-4000-8000-000000000003", "marketing")
        moved = directus.update(OTHER_ID, folder="f0000000-0000-4000-8000-000000000003")
        r = await client.post("/hooks/directus", json=moved, headers=AUTH)
        assert r.json()["documents"][0]["collection"] == "marketing"
        await catch_up_all(pool, dsn)
        live = await pool.fetch("SELECT collection FROM documents WHERE source_ref = $1 AND status <> 'deleted'",
                                OTHER_ID)  # fmt: skip
        assert [x["collection"] for x in live] == ["marketing"]
        # A sync finds every file where the webhooks put it: nothing to upload, nothing to delete.
        async with service.client_for(rt) as directus_client:
            report = await service.sync(rt, directus_client)
        assert (report.uploaded, report.deleted, report.unchanged) == ([], [], 2)
        # Deleting the file in Directus deletes its document in whatever collection it is.
        r = await client.post("/hooks/directus", json=directus.delete(FILE_ID), headers=AUTH)
        assert r.json()["deleted"] == [doc["document_id"]]


async def test_a_configured_file_field_names_the_collection(
    dsn: str, pool: asyncpg.Pool, store: EventStore, directus: directus_standin.Directus
) -> None:
    await make_collection(store, "hr")
    hook = directus.upload(FILE_ID, CONTENT, "policy.md", custom={"chronos_collection": "hr"})
    typo = directus.upload(OTHER_ID, CONTENT + b"x", "other.md", custom={"chronos_collection": "h-r"})
    settings = {"directus_url": directus.url, "directus_token": directus_standin.TOKEN,
                "directus_collection_field": "chronos_collection", "directus_default_collection": "hr"}  # fmt: skip
    async with asgi_client(dsn, pool, store, **settings) as (client, _, _rt):
        r = await client.post("/hooks/directus", json=hook, headers=AUTH)
        assert r.json()["documents"][0]["collection"] == "hr"
        assert any("fields=" in p and "chronos_collection" in p for _m, p in directus.requests)
        r = await client.post("/hooks/directus", json=typo, headers=AUTH)  # no such collection: the default one
        assert r.json()["documents"][0]["collection"] == "hr"
