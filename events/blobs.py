"""Content-addressed blob store: sha256 names, streamed in and out in chunks.

The PostgreSQL adapter writes each chunk in its own short transaction (a 200 MB upload never holds
a long write transaction, which would hold back every subscriber -- see events/subscription.py) and
publishes the content under its hash at the end. Memory stays bounded by one chunk at a time.
An S3-compatible store can implement the same ``BlobStore`` protocol.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import asyncpg

from events.errors import BlobNotFound
from events.sqlfiles import query

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BlobRef:
    """What an event stores to point at a blob."""

    sha256: str
    size: int
    media_type: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size": self.size, "media_type": self.media_type}


class BlobStore(Protocol):
    async def put_stream(self, chunks: AsyncIterable[bytes], media_type: str | None = None) -> BlobRef: ...

    async def put_bytes(self, data: bytes, media_type: str | None = None) -> BlobRef: ...

    def open(self, sha256: str) -> AsyncIterator[bytes]: ...

    async def get_bytes(self, sha256: str) -> bytes: ...

    async def stat(self, sha256: str) -> BlobRef | None: ...

    async def delete(self, sha256: str) -> bool: ...


async def _rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-slice an arbitrary byte stream into pieces of exactly ``size`` (the last may be shorter)."""
    buffer = bytearray()
    async for piece in chunks:
        buffer.extend(piece)
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


async def aiter_bytes(data: bytes | Iterable[bytes]) -> AsyncIterator[bytes]:
    """Adapt bytes (or an iterable of bytes) to the async stream ``put_stream`` takes."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    for piece in data:
        yield piece


async def aiter_file(path: Path, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Stream a file from disk in chunks."""
    with path.open("rb") as handle:
        while piece := handle.read(chunk_size):
            yield piece


class PgBlobStore:
    """Blobs in PostgreSQL (tables ``blobs`` and ``blob_chunks``)."""

    def __init__(self, pool: asyncpg.Pool, chunk_size: int = CHUNK_SIZE) -> None:
        self.pool = pool
        self.chunk_size = chunk_size

    async def put_stream(self, chunks: AsyncIterable[bytes], media_type: str | None = None) -> BlobRef:
        content_id = uuid.uuid4()
        digest = hashlib.sha256()
        size = 0
        seq = 0
        await self.pool.execute(query("blobs", "upload_begin"), content_id)
        try:
            async for piece in _rechunk(chunks, self.chunk_size):
                digest.update(piece)
                size += len(piece)
                await self.pool.execute(query("blobs", "chunk_put"), content_id, seq, piece)
                seq += 1
            sha = digest.hexdigest()
            async with self.pool.acquire() as conn, conn.transaction():
                published = await conn.fetchval(query("blobs", "publish"), sha, content_id, size, seq, media_type)
                await conn.execute(query("blobs", "upload_end"), content_id)
                if published is None:  # same content already stored: keep the first copy
                    await conn.execute(query("blobs", "chunks_drop"), content_id)
        except BaseException:
            await self._abandon(content_id)
            raise
        return BlobRef(sha, size, media_type)

    async def _abandon(self, content_id: uuid.UUID) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(query("blobs", "chunks_drop"), content_id)
                await conn.execute(query("blobs", "upload_end"), content_id)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            pass  # left for garbage collection (blob_uploads keeps the record)

    async def put_bytes(self, data: bytes, media_type: str | None = None) -> BlobRef:
        return await self.put_stream(aiter_bytes(data), media_type)

    async def stat(self, sha256: str) -> BlobRef | None:
        row = await self.pool.fetchrow(query("blobs", "meta"), sha256)
        if row is None:
            return None
        return BlobRef(row["sha256"], row["size"], row["media_type"])

    async def open(self, sha256: str) -> AsyncIterator[bytes]:
        """Stream a blob's content chunk by chunk."""
        row = await self.pool.fetchrow(query("blobs", "meta"), sha256)
        if row is None:
            raise BlobNotFound(f"no blob {sha256}")
        for seq in range(row["chunk_count"]):
            data = await self.pool.fetchval(query("blobs", "chunk_get"), row["content_id"], seq)
            if data is None:
                raise BlobNotFound(f"blob {sha256} is missing chunk {seq}")
            yield data

    async def get_bytes(self, sha256: str) -> bytes:
        return b"".join([piece async for piece in self.open(sha256)])

    async def delete(self, sha256: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            content_id = await conn.fetchval(query("blobs", "delete"), sha256)
            if content_id is None:
                return False
            await conn.execute(query("blobs", "chunks_drop"), content_id)
        return True

    async def collect_orphans(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """Remove chunks of uploads that were interrupted before publishing."""
        cutoff = datetime.now(UTC) - older_than
        ids = [r["content_id"] for r in await self.pool.fetch(query("blobs", "orphans"), cutoff)]
        for content_id in ids:
            await self._abandon(content_id)
        return len(ids)
