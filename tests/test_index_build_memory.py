"""An HNSW build after a bulk load (replay) asks for the memory its graph needs, not a fixed 1 GB."""

from __future__ import annotations

import logging

import pytest

from projections import index_memory

MWM = "SELECT pg_size_bytes(current_setting('maintenance_work_mem')) / 1048576"


def test_the_estimate_covers_the_measured_graph() -> None:
    # bench search, 1M x 384 at m 16: the building backend peaked at 3189 MB RSS (docs/benchmarks.md).
    assert 3189 < index_memory.graph_mb(1_000_000, 384, 16) < 2 * 3189
    assert index_memory.graph_mb(1_000_000, 384, 24) > index_memory.graph_mb(1_000_000, 384, 16)
    assert index_memory.build_memory_mb(100, 384, 24, None) == (1024, 1)  # never below the old floor
    assert index_memory.build_memory_mb(1_000_000, 384, 24, 2000)[0] == 2000  # at most the cap


async def _vectors(store, blobs, pool) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from projections.runner import catch_up_all
    from projections.synthetic import SyntheticDocument, random_unit_vectors

    rng = np.random.default_rng(5)
    for i in range(3):
        doc = SyntheticDocument(store, blobs, filename=f"m{i}.pdf")
        await doc.upload(doc.document_id.encode())
        await doc.convert()
        await doc.chunk([f"doc {i} chunk {j}" for j in range(4)])
        await doc.embed(random_unit_vectors(rng, 4, 32), "local:m32")
    await catch_up_all(pool)


def _built_with(records: list[logging.LogRecord]) -> list[int]:
    return [int(r.memory_mb) for r in records if getattr(r, "action", None) == "index_build"]  # type: ignore[attr-defined]


async def _build_memory_seen(pool, blobs, caplog, cap: int | None = None) -> int:  # type: ignore[no-untyped-def]
    """The maintenance_work_mem the build ran with (it runs CONCURRENTLY: outside a transaction)."""
    from projections.index import IndexProjector

    caplog.clear()
    async with pool.acquire() as conn:
        before = int(await conn.fetchval(MWM))
        with caplog.at_level(logging.INFO, logger="projections.index"):
            await IndexProjector(blobs, build_memory_cap_mb=cap).finish_bulk_load(conn)
        assert int(await conn.fetchval(MWM)) == before  # the session's setting again afterwards
        valid = "SELECT bool_and(indisvalid) FROM pg_index WHERE indexrelid::regclass::text LIKE 'vectors_hnsw_%'"
        assert await conn.fetchval(valid)
    (mb,) = _built_with(caplog.records)
    return mb


async def test_the_build_gets_the_memory_of_its_graph(store, blobs, pool, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    await _vectors(store, blobs, pool)
    seen: list[tuple[int, int, int]] = []

    def graph_mb(vectors: int, dimensions: int, m: int) -> int:
        seen.append((vectors, dimensions, m))
        return 3000

    monkeypatch.setattr(index_memory, "graph_mb", graph_mb)
    monkeypatch.delenv("CHRONOS_INDEX_BUILD_MEMORY_MB", raising=False)
    assert await _build_memory_seen(pool, blobs, caplog) == 3000  # was a fixed 1 GB
    m = await pool.fetchval("SELECT value::integer FROM settings WHERE key = 'hnsw_m'")
    assert seen == [(12, 32, m)]  # the model's vector count, its dimensions, the index's m
    assert int(await pool.fetchval(MWM)) < 3000  # the build's setting only


async def test_a_capped_build_says_it_will_be_slow(store, blobs, pool, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    await _vectors(store, blobs, pool)
    monkeypatch.setattr(index_memory, "graph_mb", lambda vectors, dimensions, m: 3000)
    with caplog.at_level(logging.WARNING, logger="projections.index"):
        assert await _build_memory_seen(pool, blobs, caplog, cap=1500) == 1500
    assert any("needs ~3000 MB" in r.getMessage() and "1500 MB" in r.getMessage() for r in caplog.records)


async def test_a_larger_server_setting_is_kept(store, blobs, pool, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    await _vectors(store, blobs, pool)
    from projections.index import IndexProjector

    async with pool.acquire() as conn:
        await conn.execute("SET maintenance_work_mem = '5000MB'")
        with caplog.at_level(logging.INFO, logger="projections.index"):
            await IndexProjector(blobs).finish_bulk_load(conn)
        assert _built_with(caplog.records) == [5000]
        assert int(await conn.fetchval(MWM)) == 5000


@pytest.mark.parametrize("raw", ["0", "-5", "lots"])
def test_a_bad_cap_is_a_clear_error(raw: str) -> None:
    from app.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="CHRONOS_INDEX_BUILD_MEMORY_MB"):
        Settings.from_env({"CHRONOS_INDEX_BUILD_MEMORY_MB": raw})
