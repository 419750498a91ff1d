"""Search within collections and by metadata (issue 15 items 2 and 5): the top-k is the true top-k within
the allowed collections (exactly, for a selective collection), hits carry their collection and metadata,
metadata filters (equality, JSON containment) narrow both sides, a metadata update is seen by the next
search, and a bad filter is refused with what is wrong (422 from the API) before anything is searched."""

from __future__ import annotations

import argparse

import asyncpg
import numpy as np
import pytest
import pytest_asyncio

from app.commands.search import filters_of, register
from app.services.search import InvalidFilter, SearchFilters, parse_meta_filter, search_rows
from events import EventStore, PgBlobStore
from projections.runner import catch_up_all
from projections.synthetic import SyntheticDocument, random_unit_vectors
from tests.api_support import AUTH, asgi_client

MODEL = "local:coll16"
DIMS = 16
PER_DOCUMENT = 50
# (collection, metadata) of each document; "hr" holds 1 of 20 documents
LAYOUT = [("hr", {"dept": "hr", "tags": ["hr", "policy"]})] + [
    ("finance" if d % 2 else "default", {"dept": "finance" if d % 2 else "ops", "tags": ["q1"], "year": 2024})
    for d in range(1, 20)
]


@pytest_asyncio.fixture(loop_scope="session")
async def library(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> tuple[np.ndarray, list[SyntheticDocument]]:
    rng = np.random.default_rng(5)
    vectors = random_unit_vectors(rng, len(LAYOUT) * PER_DOCUMENT, DIMS)
    docs = []
    for d, (collection, metadata) in enumerate(LAYOUT):
        doc = SyntheticDocument(store, blobs, filename=f"{collection}-{d:02d}.pdf")
        await doc.upload(doc.document_id.encode(), collection=collection, metadata=metadata)
        await doc.chunk([f"ledger entry {d} line {i} audit" for i in range(PER_DOCUMENT)])
        await doc.embed(vectors[d * PER_DOCUMENT : (d + 1) * PER_DOCUMENT], MODEL)
        docs.append(doc)
    await catch_up_all(pool, dsn)
    await pool.execute("ANALYZE")
    return vectors, docs


def exact_top(vectors: np.ndarray, query: np.ndarray, documents: list[int], k: int) -> list[tuple[int, int]]:
    """(document index, ordinal) of the k nearest vectors among the given documents, by cosine."""
    rows = [(d, i) for d in documents for i in range(PER_DOCUMENT)]
    sims = [float(vectors[d * PER_DOCUMENT + i] @ query) for d, i in rows]
    return [rows[j] for j in np.argsort(sims)[::-1][:k]]


async def test_collection_filter_is_the_true_top_k_and_hits_carry_collection_and_metadata(
    library: tuple[np.ndarray, list[SyntheticDocument]], pool: asyncpg.Pool
) -> None:
    vectors, docs = library
    index = {d.document_id: n for n, d in enumerate(docs)}
    query = vectors[3 * PER_DOCUMENT + 7]  # a chunk of a finance document
    for collections, allowed in (
        (["hr"], [0]),
        (["finance"], [n for n, (c, _) in enumerate(LAYOUT) if c == "finance"]),
    ):
        for mode in ("vector", "hybrid"):
            hits = await search_rows(
                pool, "ledger audit", query, 10, MODEL, mode, filters=SearchFilters(collections=collections)
            )
            assert {h.collection for h in hits} == set(collections), (mode, collections)
            assert all(h.metadata == LAYOUT[index[h.document_id]][1] for h in hits)
            if mode == "vector":  # exact scan below search_exact_limit: exactly the true top 10
                assert [(index[h.document_id], h.ordinal) for h in hits] == exact_top(vectors, query, allowed, 10)


async def test_broad_collection_through_the_index_still_gives_k_hits_of_that_collection(
    library: tuple[np.ndarray, list[SyntheticDocument]], pool: asyncpg.Pool
) -> None:
    """Above search_exact_limit the HNSW iterative scan goes on until k allowed vectors are found."""
    vectors = library[0]
    await pool.execute("UPDATE settings SET value = '10' WHERE key = 'search_exact_limit'")
    hits = await search_rows(pool, "x", vectors[0], 10, MODEL, "vector", filters=SearchFilters(collections=["finance"]))
    assert len(hits) == 10 and {h.collection for h in hits} == {"finance"}


async def test_metadata_equality_and_containment_and_updates(
    library: tuple[np.ndarray, list[SyntheticDocument]], pool: asyncpg.Pool, dsn: str
) -> None:
    vectors, docs = library
    q = vectors[0]
    eq = await search_rows(pool, "ledger", q, 50, MODEL, "hybrid",
                           filters=SearchFilters(metadata=[parse_meta_filter("dept=finance")]))  # fmt: skip
    assert eq and {h.metadata["dept"] for h in eq} == {"finance"} and {h.collection for h in eq} == {"finance"}
    policy = SearchFilters(metadata=[parse_meta_filter('{"tags": ["policy"]}')])
    contained = await search_rows(pool, "ledger", q, 50, MODEL, "text", filters=policy)
    assert contained and {h.document_id for h in contained} == {docs[0].document_id}
    both = SearchFilters(metadata=[{"tags": ["q1"]}, {"year": 2024}, {"dept": "ops"}], collections=["default"])
    hits = await search_rows(pool, "ledger", q, 50, MODEL, "vector", filters=both)
    assert hits and {h.metadata["dept"] for h in hits} == {"ops"}
    assert await search_rows(pool, "ledger", q, 10, MODEL, "hybrid", filters=SearchFilters(collections=[])) == []
    analyst = await pool.fetch(  # the SQL function by name, as docs/search.md shows it
        "SELECT collection, metadata FROM search_chunks_hybrid('ledger audit', NULL, 5, NULL, 'text', "
        """collections => ARRAY['hr'], metadata_filters => ARRAY['{"tags": ["policy"]}'::jsonb])"""
    )
    assert analyst and {(r["collection"], r["metadata"]["dept"]) for r in analyst} == {("hr", "hr")}

    await docs[2].update_metadata({"dept": "finance"})  # an ops document moves to finance: no re-embedding
    await catch_up_all(pool, dsn)
    moved = await search_rows(pool, "ledger", q, 200, MODEL, "vector",
                              filters=SearchFilters(metadata=[{"dept": "finance"}]))  # fmt: skip
    assert docs[2].document_id in {h.document_id for h in moved}


def test_bad_filters_say_what_is_wrong() -> None:
    with pytest.raises(InvalidFilter, match="neither KEY=VALUE"):
        parse_meta_filter("dept")
    with pytest.raises(InvalidFilter, match="not valid JSON"):
        parse_meta_filter('{"tags": [')
    with pytest.raises(InvalidFilter, match="must be a JSON object"):
        SearchFilters(metadata=[["hr"]]).metadata_objects()  # type: ignore[list-item]
    with pytest.raises(InvalidFilter, match="collection name 'HR!' is invalid"):
        SearchFilters(collections=["HR!"]).collection_names()


def test_cli_flags_become_filters() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["search", "q", "--collection", "hr", "--meta", "dept=hr", "--meta", '{"tags": ["x"]}'])
    f = filters_of(args)
    assert f.collections == ["hr"] and f.metadata == [{"dept": "hr"}, {"tags": ["x"]}]


async def test_api_filters_by_collection_and_meta_and_refuses_a_bad_filter_with_422(
    library: tuple[np.ndarray, list[SyntheticDocument]], dsn: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    async with asgi_client(dsn, pool, store) as (client, _, _):
        r = await client.get("/search", params={"q": "ledger audit", "mode": "text", "k": 20, "collection": "hr"},
                             headers=AUTH)  # fmt: skip
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits and {h["collection"] for h in hits} == {"hr"} and hits[0]["metadata"]["dept"] == "hr"
        r = await client.get("/search", params=[("q", "ledger"), ("mode", "text"), ("meta", "dept=finance"),
                                                ("meta", '{"year": 2024}')], headers=AUTH)  # fmt: skip
        assert r.status_code == 200 and {h["metadata"]["dept"] for h in r.json()["hits"]} == {"finance"}
        for bad, says in (("dept", "neither KEY=VALUE"), ('{"a": [', "not valid JSON")):
            r = await client.get("/search", params={"q": "ledger", "mode": "text", "meta": bad}, headers=AUTH)
            assert r.status_code == 422 and says in r.text, r.text
        r = await client.get("/search", params={"q": "ledger", "mode": "text", "collection": "No Such"}, headers=AUTH)
        assert r.status_code == 422 and "collection name" in r.text


def test_cli_refuses_a_bad_meta_filter_with_its_reason_and_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    assert main(["search", "q", "--meta", "dept"]) == 2  # refused before any database or model is touched
    err = capsys.readouterr().err
    assert "neither KEY=VALUE" in err and "Traceback" not in err
