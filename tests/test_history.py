"""A document's history (issue 12): ``chronos history``, ``GET /documents/{id}/revisions`` and the analyst
view ``v_document_revisions`` list each revision with its source, hash, stages, failure and cost, and
say which one search answers from — the same answer from all three."""

from __future__ import annotations

import asyncpg
import pytest

from app.runtime import Runtime
from app.services.documents import DocumentNotFound, history
from events import EventStore
from projections.runner import catch_up_all
from tests.api_support import AUTH, asgi_client
from tests.cli_support import Cli, cli_env
from tests.test_pipeline import drive
from tests.test_revisions import KEY, put, rt, timetable  # noqa: F401  (rt is a fixture)

pytestmark = pytest.mark.local_models
ELF = b"\x7fELF\x02\x01\x01" + bytes(500)


async def test_history_of_a_good_and_a_failed_revision(
    rt: Runtime,  # noqa: F811
    dsn: str,
    pool: asyncpg.Pool,
    store: EventStore,
) -> None:
    first = await put(rt, timetable("7:15"))
    assert (await drive(rt, [first.document_id]))[first.document_id] == "searchable"
    second = await put(rt, ELF, name="ferry.bin")
    assert (await drive(rt, [first.document_id]))[first.document_id] == "failed"
    await catch_up_all(rt.pool, rt.dsn)

    body = await history(store, KEY)  # by key ...
    assert body == await history(store, first.document_id)  # ... or by id
    assert (body["key"], body["status"], body["revision"], body["serving_revision"]) == (KEY, "failed", 2, 1)
    one, two = body["revisions"]
    assert (one["revision"], one["sha256"], one["serving"], one["failure"]) == (1, first.sha256, True, None)
    assert set(one["stages"]) == {"convert", "chunk", "embed"} and one["stages"]["chunk"]["chunk_count"] > 0
    assert (two["revision"], two["sha256"], two["serving"], two["filename"]) == (2, second.sha256, False, "ferry.bin")
    assert two["stages"] == {} and two["failure"]["stage"] == "convert"
    assert "application/x-executable" in two["failure"]["message"]
    with pytest.raises(DocumentNotFound):
        await history(store, "api:never-uploaded")

    async with asgi_client(dsn, pool, store) as (client, _app, _rt):
        r = await client.get(f"/documents/{first.document_id}/revisions", headers=AUTH)
        assert r.status_code == 200, r.text
        api = r.json()
        assert [x["revision"] for x in api["revisions"]] == [1, 2] and api["serving_revision"] == 1
        assert [x["serving"] for x in api["revisions"]] == [True, False]
        assert api["links"]["revisions"] == f"/documents/{first.document_id}/revisions"
        assert (await client.get(f"/documents/{first.document_id}", headers=AUTH)).json()["links"]["revisions"]
        missing = await client.get("/documents/00000000-0000-0000-0000-000000000000/revisions", headers=AUTH)
        assert missing.status_code == 404

    rows = await pool.fetch(
        "SELECT * FROM v_document_revisions WHERE document_id = $1 ORDER BY revision", first.document_id
    )
    assert [(r["revision"], r["serving"], r["latest"], r["sha256"]) for r in rows] == [
        (1, True, False, first.sha256), (2, False, True, second.sha256)
    ]  # fmt: skip
    assert rows[0]["embedded_at"] is not None and rows[0]["failed_stage"] is None
    assert rows[1]["failed_stage"] == "convert" and "application/x-executable" in rows[1]["failure"]
    assert [float(r["cost_usd"]) for r in rows] == pytest.approx([x["cost_usd"] for x in body["revisions"]])

    out = (await Cli(cli_env(DATABASE_URL=dsn))("history", KEY)).out
    assert f"document {first.document_id} ({KEY}): failed, search answers from revision 1" in out
    assert "* revision 1" in out and "  revision 2" in out and "failed in convert" in out
    missing_cli = await Cli(cli_env(DATABASE_URL=dsn))("history", "api:nope", ok=False)
    assert missing_cli.code != 0 and "no document" in missing_cli.err and "Traceback" not in missing_cli.err
