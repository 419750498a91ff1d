"""``chronos bench events``: append throughput against raw INSERT and COPY in the same run.

* single: W concurrent writers, one event per transaction through ``EventStore.append`` (optimistic
  concurrency on, coalesced NOTIFY on) vs a raw single-row ``INSERT`` into a plain table of the same
  shape from the same number of writers.
* batched: ``append`` of B events per call vs ``COPY`` of the same B rows into the plain table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from tqdm import tqdm

from app.bench.scratch import scratch_database
from events.connection import create_pool
from events.sqlfiles import query
from events.store import EventStore
from events.types import NewEvent

COLUMNS = ["event_id", "stream_id", "stream_version", "type", "data", "metadata"]


def _payload(i: int) -> dict[str, Any]:
    return {"document_id": str(uuid.UUID(int=i)), "filename": f"doc-{i}.pdf", "size": 1000 + i, "source": "bench"}


async def _timed(
    total: int, label: str, work: Callable[[tqdm], Awaitable[None]], quiet: bool, pool: asyncpg.Pool | None = None
) -> float:
    if pool is not None:
        # Start each measured run from a clean checkpoint so a background checkpoint does not land
        # on one contender only (needs superuser; skipped otherwise).
        with contextlib.suppress(asyncpg.PostgresError):
            await pool.execute("CHECKPOINT")
    bar = tqdm(total=total, desc=label, unit="ev", leave=False, disable=quiet)
    start = time.perf_counter()
    await work(bar)
    elapsed = time.perf_counter() - start
    bar.close()
    return total / elapsed


async def run_bench(
    writers: int, per_writer: int, batch: int, batches: int, quiet: bool, rounds: int = 3
) -> dict[str, Any]:
    async with scratch_database() as dsn:
        pool = await create_pool(dsn, min_size=writers, max_size=writers + 1)
        store = EventStore(pool)
        await pool.execute(query("bench", "plain_event_table"))
        meta = {"actor": "bench"}
        try:

            async def single_raw(bar: tqdm) -> None:
                async def writer(w: int) -> None:
                    async with pool.acquire() as conn:
                        for k in range(per_writer):
                            await conn.execute(
                                query("bench", "plain_event_insert"),
                                uuid.uuid4(),
                                f"raw-{w}",
                                k + 1,
                                "BenchEvent",
                                _payload(k),
                                meta,
                            )
                            bar.update(1)

                await asyncio.gather(*(writer(w) for w in range(writers)))

            async def batched_copy(bar: tqdm) -> None:
                async with pool.acquire() as conn:
                    for b in range(batches):
                        rows = [
                            (uuid.uuid4(), f"copy-{b}", i + 1, "BenchEvent", _payload(i), meta) for i in range(batch)
                        ]
                        await conn.copy_records_to_table("bench_plain", records=rows, columns=COLUMNS)
                        bar.update(batch)

            total_single = writers * per_writer
            total_batched = batch * batches
            # Warm up both paths (plans, caches), then alternate to share the machine's noise.
            await _timed(writers * 20, "warm-up", _warm(store, pool, writers), True)
            results: dict[str, list[float]] = {"append_single": [], "raw_insert": [], "append_batched": [], "copy": []}
            for _ in range(rounds):
                results["raw_insert"].append(await _timed(total_single, "raw INSERT", single_raw, quiet, pool))
                one = single_append_fresh(store, writers, per_writer, meta)
                results["append_single"].append(await _timed(total_single, "append x1", one, quiet, pool))
                results["copy"].append(await _timed(total_batched, "COPY", batched_copy, quiet, pool))
                many = batched_append_fresh(store, batch, batches, meta)
                results["append_batched"].append(await _timed(total_batched, f"append x{batch}", many, quiet, pool))
            best = {k: max(v) for k, v in results.items()}
            await store.notifier.flush()
            return {
                "writers": writers,
                "rounds": rounds,
                "events_single": total_single,
                "batch_size": batch,
                "events_batched": total_batched,
                "events_per_s": {k: round(v) for k, v in best.items()},
                "runs_per_s": {k: [round(x) for x in v] for k, v in results.items()},
                "ratio_single_vs_insert": round(best["append_single"] / best["raw_insert"], 3),
                "ratio_batched_vs_copy": round(best["append_batched"] / best["copy"], 3),
                "notifications_sent": store.notifier.sent,
                "targets": {"single_vs_insert": 0.7, "batched_vs_copy": 0.5},
            }
        finally:
            await pool.close()


def single_append_fresh(
    store: EventStore, writers: int, per_writer: int, meta: dict[str, str]
) -> Callable[[tqdm], Awaitable[None]]:
    """Single-event appends to fresh streams (so repeated runs don't collide on versions)."""
    run_id = uuid.uuid4().hex[:8]

    async def work(bar: tqdm) -> None:
        async def writer(w: int) -> None:
            stream = f"bench-single-{run_id}-{w}"
            # Each writer holds one connection, like the raw INSERT writers: this measures the
            # store, not pool acquire/release.
            async with store.pool.acquire() as conn:
                for k in range(per_writer):
                    await store.append(stream, [NewEvent("BenchEvent", _payload(k), meta)], k, conn=conn)
                    bar.update(1)

        await asyncio.gather(*(writer(w) for w in range(writers)))

    return work


def batched_append_fresh(
    store: EventStore, batch: int, batches: int, meta: dict[str, str]
) -> Callable[[tqdm], Awaitable[None]]:
    run_id = uuid.uuid4().hex[:8]

    async def work(bar: tqdm) -> None:
        for b in range(batches):
            events = [NewEvent("BenchEvent", _payload(i), meta) for i in range(batch)]
            await store.append(f"bench-batch-{run_id}-{b}", events, 0)
            bar.update(batch)

    return work


def _warm(store: EventStore, pool: asyncpg.Pool, writers: int) -> Callable[[tqdm], Awaitable[None]]:
    async def work(bar: tqdm) -> None:
        await single_append_fresh(store, writers, 20, {"actor": "warm-up"})(bar)

    return work


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="append throughput vs raw INSERT and COPY")
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--per-writer", type=int, default=1000, help="single-event appends per writer")
    p.add_argument("--batch", type=int, default=1000, help="events per batched append")
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is kept")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    result = await run_bench(
        args.writers, args.per_writer, args.batch, args.batches, quiet=args.json, rounds=args.rounds
    )
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    eps = result["events_per_s"]
    print(
        f"single-event appends, {result['writers']} writers, {result['events_single']} events per run"
        f" (best of {result['rounds']}):"
    )
    print(f"  append (1 event/tx)   {eps['append_single']:>9} ev/s")
    print(f"  raw INSERT (1 row/tx) {eps['raw_insert']:>9} ev/s")
    print(f"  ratio                 {result['ratio_single_vs_insert']:>9}   (target >= 0.7)")
    print(f"batched, {result['batch_size']} events per call, {result['events_batched']} events per run:")
    print(f"  append (batched)      {eps['append_batched']:>9} ev/s")
    print(f"  COPY                  {eps['copy']:>9} ev/s")
    print(f"  ratio                 {result['ratio_batched_vs_copy']:>9}   (target >= 0.5)")
    print(f"NOTIFYs sent by the appenders: {result['notifications_sent']}")
    return 0
