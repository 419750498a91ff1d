"""Replay: rebuild every projection from the log and blob store alone."""

from __future__ import annotations

import asyncpg

from events.errors import InvalidRequest, NotFound

HASHED = {
    "documents": "document_id",
    "index_documents": "document_id",
    "chunk_sets": "chunk_set_id",
    "chunk_rows": "chunk_id",
    "vector_sets": "document_id, model",
    "embedding_models": "model",
    "vectors": "chunk_id, model",
    "vectors_history": "chunk_id, model, valid_from",
    "vector_problems": "event_id",
    "cost_ledger": "position",
    "embedding_cache": "model, dimensions, text_sha256, document_id",
    "collections": "name",
}


async def projection_hashes(pool: asyncpg.Pool) -> dict[str, str]:
    """md5 over every row of every projection table, in key order."""
    out = {}
    for table, key in HASHED.items():
        out[table] = await pool.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY {key}), '')) || ':' || count(*) FROM {table} t"
        )
    return out


async def build_history(store, blobs, pool, dsn):  # type: ignore[no-untyped-def]
    import numpy as np

    from app.catalogue import events as ev
    from app.catalogue.codec import new_event
    from app.catalogue.ids import collection_stream
    from projections.runner import catch_up_all
    from projections.synthetic import SyntheticDocument, random_unit_vectors

    rng = np.random.default_rng(3)
    docs = []
    created = ev.CollectionCreated(name="finance", description="Finance", monthly_budget_usd=5.0)
    await store.append(collection_stream("finance"), [new_event(created, {"actor": "test"})])
    budget = ev.CollectionBudgetSet(name="default", monthly_budget_usd=7.5)  # default has no CollectionCreated
    await store.append(collection_stream("default"), [new_event(budget, {"actor": "test"})])
    for i in range(4):
        doc = SyntheticDocument(store, blobs, filename=f"d{i}.pdf")
        if i == 1:
            await doc.upload(doc.document_id.encode(), collection="finance", metadata={"dept": "finance", "n": 1})
        else:
            await doc.upload(doc.document_id.encode())
        await doc.convert()
        await doc.chunk([f"doc {i} chunk {j}" for j in range(6)])
        await doc.embed(random_unit_vectors(rng, 6, 32), "local:m32")
        docs.append(doc)
    await docs[0].request("chunk", chunk_size=64)
    await docs[0].chunk(["short a", "short b"], chunk_size=64)
    await docs[0].embed(random_unit_vectors(rng, 2, 32), "local:m32")
    await docs[1].embed(random_unit_vectors(rng, 6, 48), "openai:m48", tokens=100, price=2e-8)
    await docs[2].fail("embed", "Timeout", "too slow", final=True)
    await docs[3].delete()
    await docs[0].update_metadata({"dept": "hr", "tags": ["a", "b"]})  # after its chunk rows are in
    await docs[1].update_metadata({"n": None, "year": "2026"})
    await catch_up_all(pool, dsn)
    return docs


async def test_replay_is_deterministic_and_makes_no_external_calls(store, blobs, pool, dsn, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    import orjson

    from projections.replay import replay

    await build_history(store, blobs, pool, dsn)
    before = await projection_hashes(pool)

    for mod in ("openai", "modal", "sentence_transformers", "app.embedders", "app.convert"):
        monkeypatch.setitem(sys.modules, mod, None)  # importing it raises ImportError
    stats = await replay(pool, dsn, progress=False)
    assert stats.events > 0 and stats.events_per_s > 0
    assert await projection_hashes(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%hnsw%'") == 2
    assert await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'chronos_re%'") == 1  # shadow only
    # Views point at the swapped-in tables, and the live projectors carry on from the replay's checkpoint.
    assert await pool.fetchval("SELECT count(*) FROM v_documents") == 4
    # Collections and metadata are rebuilt too (the hashes cover them; these say what they hold).
    rows = await pool.fetch("SELECT DISTINCT collection, metadata::text AS m FROM chunk_rows ORDER BY 1, 2")
    assert [(r["collection"], orjson.loads(r["m"])) for r in rows] == [
        ("default", {"dept": "hr", "tags": ["a", "b"]}),
        ("default", {}),
        ("finance", {"dept": "finance", "year": "2026"}),
    ]
    budgets = await pool.fetch(
        "SELECT name, monthly_budget_usd, created_at IS NULL AS implicit FROM collections ORDER BY name"
    )
    assert [tuple(r) for r in budgets] == [("default", 7.5, True), ("finance", 5, False)]
    from projections.runner import catch_up_all

    assert await catch_up_all(pool, dsn) == 0


async def test_replay_one_document_repairs_its_rows_and_leaves_the_rest(store, blobs, pool, dsn) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from projections.replay_document import replay_documents

    docs = await build_history(store, blobs, pool, dsn)
    before = await projection_hashes(pool)
    target = docs[0].document_id  # re-chunked and re-embedded: the richest history
    # Damage the document's rows in every projection (as a bad manual fix would).
    await pool.execute("DELETE FROM vectors WHERE document_id = $1", target)
    await pool.execute("DELETE FROM chunks WHERE document_id = $1 AND ordinal = 0", target)
    await pool.execute("UPDATE documents SET status = 'broken', chunk_count = 999 WHERE document_id = $1", target)
    await pool.execute("DELETE FROM cost_ledger WHERE document_id = $1", target)
    assert await projection_hashes(pool) != before

    done = await replay_documents(pool, [str(target)])
    assert {d.projection for d in done} == {"documents", "index", "cost_ledger", "embedding_cache"}
    assert all(d.events > 0 for d in done)
    assert await projection_hashes(pool) == before
    # Other documents were not touched, and a deleted document stays deleted.
    await replay_documents(pool, [str(docs[3].document_id)])
    assert await projection_hashes(pool) == before

    with pytest.raises(InvalidRequest, match="not a document id"):
        await replay_documents(pool, ["nope"])
    with pytest.raises(NotFound, match="no events"):
        await replay_documents(pool, ["00000000-0000-0000-0000-000000000001"])


async def test_a_swap_failed_by_a_deadlock_runs_again(store, blobs, pool, dsn, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """At the end of a 300k-chunk replay an autovacuum analysing a swapped-in table and the next swap's
    re-grants deadlocked, and PostgreSQL failed the swap: the replay died after 13 minutes. The swap
    now runs again (its transaction rolled back, the shadow tables are untouched). Here the first
    attempt of two swaps is failed by PostgreSQL's own deadlock error, raised inside the transaction."""
    import projections.replay as replay_module

    await build_history(store, blobs, pool, dsn)
    before = await projection_hashes(pool)
    real = replay_module.reapply_views
    failed: list[int] = []

    async def deadlocking(conn: asyncpg.Connection) -> None:
        await real(conn)  # the swap's changes are in the transaction when it fails
        if len(failed) < 2:
            failed.append(1)
            await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$")

    monkeypatch.setattr(replay_module, "reapply_views", deadlocking)
    stats = await replay_module.replay(pool, dsn, progress=False)
    assert len(failed) == 2 and stats.events > 0
    assert await projection_hashes(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM v_documents") == 4
    assert await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'chronos_re%'") == 1
    from projections.runner import catch_up_all

    assert await catch_up_all(pool, dsn) == 0
