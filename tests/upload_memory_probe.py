"""Run alone in a fresh interpreter by tests/test_api_documents.py: 32 MB raw and 32 MB multipart
uploads through the ASGI app, with tracemalloc on for just those requests. Measured in a process of
its own, so what other tests left running (threads, tasks, caches) cannot add to the figure.
Prints one JSON object: the responses and the peak traced memory in bytes."""

from __future__ import annotations

import asyncio
import sys
import tracemalloc
from collections.abc import AsyncIterator

import orjson

from events.connection import create_pool
from events.store import EventStore
from tests.api_support import AUTH, asgi_client

PIECE = (b"## Section\n\n" + b"The beacon over the quarry was lit again tonight. " * 6000)[: 256 * 1024]
TOTAL = 32 * 1024 * 1024


async def raw() -> AsyncIterator[bytes]:
    for i in range(TOTAL // len(PIECE)):
        yield PIECE[:-8] + f"{i:08d}".encode()


async def multipart() -> AsyncIterator[bytes]:
    yield b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="big.md"\r\n\r\n'
    async for p in raw():
        yield p[:-1] + b"m"
    yield b"\r\n--BOUND--\r\n"


async def main(dsn: str) -> dict[str, object]:
    pool = await create_pool(dsn, min_size=1, max_size=10)
    store = EventStore(pool)
    try:
        async with asgi_client(dsn, pool, store) as (client, _app, _rt):
            # One small upload first: imports and first-call caches are not the uploads' memory.
            await client.post("/documents", content=b"# warm-up\n", headers={**AUTH, "X-Filename": "warm.md"})
            tracemalloc.start()
            try:
                r1 = await client.post("/documents", content=raw(), headers={**AUTH, "X-Filename": "big.md"})
                r2 = await client.post(
                    "/documents",
                    content=multipart(),
                    headers={**AUTH, "Content-Type": "multipart/form-data; boundary=BOUND"},
                )
                _current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        await store.notifier.flush()
        await pool.close()
    return {
        "peak": peak,
        "raw": {"status": r1.status_code, "body": r1.json()},
        "multipart": {"status": r2.status_code, "body": r2.json()},
    }


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(asyncio.run(main(sys.argv[1]))).decode() + "\n")
