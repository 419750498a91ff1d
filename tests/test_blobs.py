"""Blob store: content-addressed, deduplicated, streamed with bounded memory, crash-safe uploads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import psutil
import pytest

from events import BlobNotFound, PgBlobStore
from events.blobs import aiter_bytes, aiter_file

ROOT = Path(__file__).resolve().parent.parent


async def chunk_rows(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM blob_chunks"))


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 4321])
async def test_round_trip(pool: asyncpg.Pool, size: int) -> None:
    blobs = PgBlobStore(pool, chunk_size=1000)
    data = os.urandom(size)
    # Uneven input pieces: the store re-slices them into chunks of its own size.
    pieces = [data[i : i + 333] for i in range(0, size, 333)]
    ref = await blobs.put_stream(aiter_bytes(pieces), "application/octet-stream")
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == size
    assert await blobs.get_bytes(ref.sha256) == data
    assert [len(p) for p in [p async for p in blobs.open(ref.sha256)]] == [
        min(1000, size - i) for i in range(0, size, 1000)
    ]
    assert await blobs.stat(ref.sha256) == ref
    assert await chunk_rows(pool) == -(-size // 1000)


async def test_identical_content_is_stored_once(pool: asyncpg.Pool) -> None:
    blobs = PgBlobStore(pool, chunk_size=1000)
    data = os.urandom(3500)
    first = await blobs.put_bytes(data, "application/pdf")
    second = await blobs.put_bytes(data, "application/pdf")
    assert first.sha256 == second.sha256
    # Two uploads of the same content racing each other also end with one copy.
    racing = await asyncio.gather(*(blobs.put_bytes(data) for _ in range(4)))
    assert {r.sha256 for r in racing} == {first.sha256}
    assert await pool.fetchval("SELECT count(*) FROM blobs") == 1
    assert await chunk_rows(pool) == 4
    assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 0
    assert await blobs.get_bytes(first.sha256) == data


async def test_delete(pool: asyncpg.Pool, tmp_path: Path) -> None:
    blobs = PgBlobStore(pool, chunk_size=1000)
    keep = await blobs.put_bytes(b"keep me")
    path = tmp_path / "doc.bin"
    path.write_bytes(os.urandom(2500))
    gone = await blobs.put_stream(aiter_file(path, 700))
    assert await blobs.delete(gone.sha256) is True
    assert await blobs.stat(gone.sha256) is None
    with pytest.raises(BlobNotFound, match=gone.sha256):
        await blobs.get_bytes(gone.sha256)
    assert await blobs.delete(gone.sha256) is False
    assert await chunk_rows(pool) == 1  # only the kept blob's chunk
    assert await blobs.get_bytes(keep.sha256) == b"keep me"


async def test_failed_upload_leaves_nothing(pool: asyncpg.Pool) -> None:
    blobs = PgBlobStore(pool, chunk_size=1000)

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(2500)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await blobs.put_stream(broken())
    assert await chunk_rows(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 0


_CRASHING_UPLOAD = """
import asyncio, os, sys
from events.blobs import PgBlobStore
from events.connection import create_pool

async def main() -> None:
    pool = await create_pool(sys.argv[1], min_size=1, max_size=2)
    async def forever():
        while True:
            yield os.urandom(1500)
            await asyncio.sleep(0.05)
    await PgBlobStore(pool, chunk_size=1000).put_stream(forever())

asyncio.run(main())
"""


async def test_interrupted_upload_is_collected_as_orphan(pool: asyncpg.Pool, dsn: str) -> None:
    blobs = PgBlobStore(pool, chunk_size=1000)
    kept = await blobs.put_bytes(os.urandom(2000))
    # A process killed in the middle of an upload cannot clean up after itself.
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _CRASHING_UPLOAD, dsn, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while await chunk_rows(pool) < 6:
            assert child.returncode is None, "the uploading process ended on its own"
            assert time.monotonic() < deadline, "the uploading process wrote no chunks"
            await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    left = await chunk_rows(pool)
    assert left >= 6
    assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 1
    assert await blobs.collect_orphans() == 0  # younger than an hour: it might still be running
    assert await blobs.collect_orphans(older_than=timedelta(0)) == 1
    assert await chunk_rows(pool) == 2  # only the published blob's chunks
    assert await pool.fetchval("SELECT count(*) FROM blob_uploads") == 0
    assert len(await blobs.get_bytes(kept.sha256)) == 2000


async def test_200_mb_blob_round_trips_with_bounded_memory(pool: asyncpg.Pool) -> None:
    size = 200 * 1024 * 1024
    piece = 700 * 1024  # deliberately not a multiple of the store's chunk size
    blobs = PgBlobStore(pool)
    expected = hashlib.sha256()
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    rss_peak = rss_before
    done = asyncio.Event()

    async def sample_rss() -> None:
        nonlocal rss_peak
        while not done.is_set():
            rss_peak = max(rss_peak, proc.memory_info().rss)
            await asyncio.sleep(0.05)

    async def generated() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            data = os.urandom(min(piece, size - sent))
            expected.update(data)
            sent += len(data)
            yield data

    sampler = asyncio.create_task(sample_rss())
    tracemalloc.start()
    try:
        ref = await blobs.put_stream(generated(), "application/octet-stream")
        got = hashlib.sha256()
        received = 0
        async for chunk in blobs.open(ref.sha256):
            got.update(chunk)
            received += len(chunk)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        done.set()
        await sampler
    assert ref.size == size == received
    assert ref.sha256 == expected.hexdigest() == got.hexdigest()
    mb = 1024 * 1024
    print(f"200 MB round trip: traced peak {traced_peak / mb:.1f} MB, RSS growth {(rss_peak - rss_before) / mb:.1f} MB")
    assert traced_peak < 40 * mb, f"peak traced Python memory {traced_peak / mb:.1f} MB"
    assert rss_peak - rss_before < 40 * mb, f"RSS grew by {(rss_peak - rss_before) / mb:.1f} MB"
    await blobs.delete(ref.sha256)
