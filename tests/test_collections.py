"""Collections and metadata through the API and the CLI on a real database: uploads into a collection
(the same bytes in two collections are two documents), unknown collections and bad metadata refused
with nothing stored, metadata updates without any stage work, and ``chronos collections``."""

from __future__ import annotations

import asyncpg
import httpx
import numpy as np
import orjson

from events.blobs import PgBlobStore
from events.store import EventStore
from events.types import NewEvent
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors
from tests.api_support import AUTH, asgi_client, event_count
from tests.cli_support import Cli, cli_env

MD = b"# Quarterly ledger\n\nThe harbour accounts for the third quarter.\n"


async def upload(client: httpx.AsyncClient, data: bytes = MD, **params: str) -> httpx.Response:
    fields = {k: v for k, v in params.items() if k in ("collection", "metadata")}
    query = {k.removeprefix("q_"): v for k, v in params.items() if k.startswith("q_")}
    return await client.post("/documents", params=query, data=fields,
                             files={"file": ("ledger.md", data, "text/markdown")}, headers=AUTH)  # fmt: skip


async def stored(pool: asyncpg.Pool) -> tuple[int, int]:
    return await event_count(pool), int(await pool.fetchval("SELECT count(*) FROM blobs"))


async def test_same_bytes_in_two_collections_are_two_documents_and_in_one_collection_one(
    dsn: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        made = await client.post("/collections", json={"name": "finance", "description": "Finance"}, headers=AUTH)
        assert made.status_code == 201, made.text
        assert made.json()["name"] == "finance" and made.json()["created_at"] is not None
        plain = await upload(client)
        finance = await upload(client, collection="finance", metadata='{"dept": "finance"}')
        again = await upload(client, q_collection="finance")
        assert plain.status_code == finance.status_code == 202 and again.status_code == 200, again.text
        assert plain.json()["collection"] == "default" and finance.json()["collection"] == "finance"
        assert plain.json()["document_id"] != finance.json()["document_id"]
        assert again.json()["document_id"] == finance.json()["document_id"] and not again.json()["metadata_updated"]
        await catch_up_all(pool, dsn)
        detail = (await client.get(f"/documents/{finance.json()['document_id']}", headers=AUTH)).json()
        assert (detail["collection"], detail["metadata"]) == ("finance", {"dept": "finance"})
        listed = (await client.get("/documents", headers=AUTH)).json()["documents"]
        assert sorted((d["collection"], orjson.dumps(d["metadata"]).decode()) for d in listed) == [
            ("default", "{}"), ("finance", '{"dept":"finance"}'),
        ]  # fmt: skip
        names = (await client.get("/collections", headers=AUTH)).json()["collections"]
        assert [(c["name"], c["documents"]) for c in names] == [("default", 1), ("finance", 1)]
        stats = (await client.get("/collections/finance/stats", headers=AUTH)).json()
        assert (stats["documents"], stats["by_status"], stats["bytes"]) == (1, {"uploaded": 1}, len(MD))
        assert (await client.get("/collections/nope/stats", headers=AUTH)).status_code == 404
        dup = await client.post("/collections", json={"name": "finance"}, headers=AUTH)
        assert dup.status_code == 409 and "exists already" in dup.json()["error"]["message"]


async def test_unknown_collection_and_bad_metadata_are_refused_with_nothing_stored(
    dsn: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        before = await stored(pool)
        missing = await upload(client, collection="fiance")
        assert missing.status_code == 404, missing.text
        assert "chronos collections create fiance" in missing.json()["error"]["message"]
        bad_name = await upload(client, q_collection="Finance")
        assert bad_name.status_code == 400 and "lowercase letter or digit" in bad_name.json()["error"]["message"]
        for metadata, problem in [
            ("[1, 2]", "must be a JSON object"),
            ("{dept: hr}", "not valid JSON"),
            (orjson.dumps({"a": "x" * 20_000}).decode(), "the limit is 16384 bytes"),
            ('{"a": {"b": {"c": {"d": {"e": 1}}}}}', "nests deeper than 5"),
        ]:
            refused = await upload(client, metadata=metadata)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "invalid_metadata" and problem in refused.text
        assert await stored(pool) == before  # no event, no blob
        # A form field after the file part is not silently ignored (the file is streamed before it is seen,
        # so its blob may be stored; no document is recorded).
        late = await client.post("/documents", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
                                 content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n'
                                 + MD + b'\r\n--b\r\nContent-Disposition: form-data; name="collection"\r\n\r\n'
                                 b"finance\r\n--b--\r\n")  # fmt: skip
        assert late.status_code == 400 and "must come before the 'file' part" in late.text
        assert await event_count(pool) == before[0]
        assert await pool.fetchval("SELECT count(*) FROM events WHERE type = 'DocumentUploaded'") == 0


async def test_metadata_updates_reach_search_rows_without_any_stage_work(
    dsn: str, pool: asyncpg.Pool, store: EventStore, blobs: PgBlobStore
) -> None:
    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        first = (await upload(client, metadata='{"dept": "finance", "year": "2025"}')).json()
        doc = SyntheticDocument(store, blobs, document_id=first["document_id"])
        await doc.convert()
        await doc.chunk(["first chunk", "second chunk"])
        await doc.embed(random_unit_vectors(np.random.default_rng(1), 2, 16), "local:m16")
        await catch_up_all(pool, dsn)
        events_before = await event_count(pool)
        jobs_before = await pool.fetchval("SELECT count(*) FROM jobs")

        # The same content again with new metadata: the same document, the metadata recorded.
        again = (await upload(client, metadata='{"tags": ["q3"]}')).json()
        assert again["document_id"] == first["document_id"] and again["metadata_updated"] is True
        body = b'{"year": null, "owner": "ana"}'
        patched = await client.patch(f"/documents/{doc.document_id}/metadata", content=body, headers=AUTH)
        assert patched.status_code == 200, patched.text
        assert patched.json()["metadata"] == {"dept": "finance", "tags": ["q3"], "owner": "ana"}
        await catch_up_all(pool, dsn)
        rows = await pool.fetch("SELECT DISTINCT metadata::text AS m FROM chunk_rows WHERE document_id = $1",
                                doc.document_id)  # fmt: skip
        assert [orjson.loads(r["m"]) for r in rows] == [{"dept": "finance", "owner": "ana", "tags": ["q3"]}]
        hits = await pool.fetchval("SELECT count(*) FROM chunks c JOIN chunk_rows r USING (chunk_id) "
                                   "WHERE r.metadata @> '{\"owner\": \"ana\"}'")  # fmt: skip
        assert hits == 2
        # Two metadata events and nothing else: no conversion, chunking, embedding or job.
        added = await pool.fetch("SELECT type FROM events WHERE position > (SELECT max(position) - $1 FROM events)",
                                 await event_count(pool) - events_before)  # fmt: skip
        assert [r["type"] for r in added] == ["DocumentMetadataUpdated"] * 2
        assert await pool.fetchval("SELECT count(*) FROM jobs") == jobs_before
        replaced = await client.patch(f"/documents/{doc.document_id}/metadata?mode=replace", content=b'{"k": 1}',
                                      headers=AUTH)  # fmt: skip
        assert replaced.json()["metadata"] == {"k": 1} and replaced.json()["changed"] is True
        same = await client.patch(f"/documents/{doc.document_id}/metadata", content=b'{"k": 1}', headers=AUTH)
        assert same.json()["changed"] is False
        bad = await client.patch(f"/documents/{doc.document_id}/metadata", content=b"[1]", headers=AUTH)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_metadata"
        mode = await client.patch(f"/documents/{doc.document_id}/metadata?mode=upsert", content=b"{}", headers=AUTH)
        assert mode.status_code == 400 and "merge or replace" in mode.text
        gone = await client.patch("/documents/00000000-0000-0000-0000-000000000000/metadata", content=b"{}",
                                  headers=AUTH)  # fmt: skip
        assert gone.status_code == 404


async def test_cli_collections_ingest_with_metadata_and_documents_meta(dsn: str, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "a.md").write_bytes(MD)
    meta_file = folder / "meta.json"
    meta_file.write_text('{"year": 2026, "tags": ["x"]}')
    cli = Cli(cli_env(DATABASE_URL=dsn))
    typo = await cli("ingest", str(folder / "a.md"), "--collection", "hr", ok=False)
    assert typo.code == 3 and "chronos collections create hr" in typo.err and "Traceback" not in typo.err
    made = (await cli("collections", "create", "hr", "--description", "People", "--budget", "12.5", "--json")).json()
    assert (made["name"], made["monthly_budget_usd"]) == ("hr", 12.5)
    dup = await cli("collections", "create", "hr", ok=False)
    assert dup.code == 4 and "exists already" in dup.err and "Traceback" not in dup.err
    badmeta = await cli("ingest", str(folder / "a.md"), "--meta", "novalue", ok=False)
    assert badmeta.code == 2 and "is not KEY=VALUE" in badmeta.err
    rows = (await cli("ingest", str(folder / "a.md"), "--collection", "hr", "--meta", "dept=people",
                      "--meta-json", str(meta_file), "--json")).json()  # fmt: skip
    assert rows[0]["collection"] == "hr" and rows[0]["created"] is True
    doc = rows[0]["document_id"]
    shown = (await cli("documents", "show", doc, "--json")).json()
    assert (shown["collection"], shown["metadata"]) == ("hr", {"dept": "people", "year": 2026, "tags": ["x"]})
    changed = (await cli("documents", "meta", doc, "dept=hr", "--json")).json()
    assert changed["changed"] is True and changed["metadata"]["dept"] == "hr"
    replaced = (await cli("documents", "meta", doc, "only=this", "--replace", "--json")).json()
    assert replaced["metadata"] == {"only": "this"}
    assert "collection  hr" in (await cli("documents", "show", doc)).out
    listed = (await cli("collections", "list", "--json")).json()
    assert [(c["name"], c["documents"], c["monthly_budget_usd"]) for c in listed] == [
        ("default", 0, None), ("hr", 1, 12.5),
    ]  # fmt: skip
    stats = (await cli("collections", "stats", "hr", "--json")).json()
    assert (stats["documents"], stats["bytes"], stats["spent_this_month_usd"]) == (1, len(MD), 0.0)
    assert "hr: 1 live documents" in (await cli("collections", "stats")).out
    missing = await cli("collections", "stats", "nope", ok=False)
    assert missing.code == 3 and "chronos collections create nope" in missing.err
    assert "$40.00/month" in (await cli("collections", "budget", "hr", "40")).out
    assert "no budget of its own" in (await cli("collections", "budget", "default", "none")).out
    budgets = {c["name"]: c["monthly_budget_usd"] for c in (await cli("collections", "list", "--json")).json()}
    assert budgets == {"default": None, "hr": 40.0}
    unknown = await cli("collections", "budget", "nope", "5", ok=False)
    assert unknown.code == 3 and "chronos collections create nope" in unknown.err and "Traceback" not in unknown.err
    bad = await cli("collections", "budget", "hr", "lots", ok=False)
    assert bad.code == 2 and "not an amount" in bad.err


async def test_create_answers_from_the_log_when_the_projection_is_held_back(
    dsn: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    """An open transaction that appended to the log holds every projection's safe horizon back, so
    the collections projection cannot have the new collection yet: the answer still is a 201 with the
    collection (it was a 500, IndexError on an empty listing)."""
    async with asgi_client(dsn, pool, store) as (client, _app, _rt), pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await store.append("held-open", [NewEvent("Held", {})], conn=holder)
        try:
            made = await client.post("/collections", json={"name": "legal", "monthly_budget_usd": 5}, headers=AUTH)
            assert made.status_code == 201, made.text
            body = made.json()
            assert (body["name"], body["monthly_budget_usd"], body["documents"]) == ("legal", 5, 0)
            assert body["created_at"] is not None
        finally:
            await tx.rollback()
        await catch_up_all(pool, dsn)
        names = (await client.get("/collections", headers=AUTH)).json()["collections"]
        assert "legal" in [c["name"] for c in names]
