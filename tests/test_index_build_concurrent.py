"""Replay's HNSW build holds no transaction id, so live subscribers keep going while it runs.

The log's safe horizon is the server's oldest open transaction id (``pg_snapshot_xmin``). A plain
CREATE INDEX holds one for the whole build -- 40 minutes at 1M vectors -- and every subscriber on the
server (every projection, in every database) stopped at the events committed meanwhile. Seen while
``bench replay`` at 1M built its index: ``bench compare`` in another database found 23 documents
searchable in the log with no rows in its projections.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from events import EventStore, NewEvent, RecordedEvent, Subscription
from events.blobs import PgBlobStore
from events.types import DbConn
from projections.index import IndexProjector

MODEL = "local:m64"
DIMENSIONS = 64
VECTORS = 5_000  # a build of a second or more here, so a held-back subscriber would show


async def test_a_live_subscriber_reads_new_events_while_replay_builds_its_index(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool
) -> None:
    await pool.execute("INSERT INTO embedding_models VALUES ($1, $2, '', 0)", MODEL, DIMENSIONS)
    await pool.execute(
        "INSERT INTO vectors (chunk_id, model, document_id, embedding) "
        "SELECT gen_random_uuid(), $1, gen_random_uuid(), "
        "       ARRAY(SELECT random() - 0.5 FROM generate_series(1, $2::int) WHERE g > 0)::vector "
        "FROM generate_series(1, $3::int) AS g",
        MODEL, DIMENSIONS, VECTORS,
    )  # fmt: skip
    seen: list[RecordedEvent] = []

    async def handler(conn: DbConn, events: list[RecordedEvent]) -> None:
        seen.extend(events)

    live = Subscription(store, "live-projection", handler)
    await live.catch_up()

    async with pool.acquire() as builder_conn:
        builder_pid = builder_conn.get_server_pid()
        build = asyncio.create_task(IndexProjector(PgBlobStore(pool)).finish_bulk_load(builder_conn))
        try:
            deadline = time.monotonic() + 60
            while not await pool.fetchval(
                "SELECT query ILIKE 'CREATE INDEX%' FROM pg_stat_activity WHERE pid = $1", builder_pid
            ):
                assert not build.done(), "the build ended before it could be watched"
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            appended = await store.append("live-stream", [NewEvent("Thing", {"n": 1}, {"actor": "test"})])
            while not seen and not build.done():
                await live.catch_up()
                await asyncio.sleep(0.02)
            assert seen, "the live subscriber saw the new event only once the index build had ended"
            assert not build.done()
            assert seen[0].position == appended.last_position
        finally:
            await build
    index = await pool.fetchval("SELECT index_name FROM embedding_models WHERE model = $1", MODEL)
    assert await pool.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = $1::regclass", index)
