"""Fault suite: ingest through real worker processes while things break; lose nothing, double nothing.

Quick form (default, part of the README's test command): a few dozen documents per scenario.
Long form: ``CHRONOS_FAULTS_LONG=1 pytest tests/faults`` -- a few hundred documents, many faults.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.faults.harness import LONG, Scenario, server_dsn, upload_documents, verify, wait_final

pytestmark = [pytest.mark.local_models, pytest.mark.faults]

DOCS = int(os.environ.get("CHRONOS_FAULTS_DOCS") or (300 if LONG else 16))
TIMEOUT = 1800 if LONG else 600
RESULTS = Path(__file__).resolve().parent / "last_results.json"


def record(name: str, figures: dict[str, object]) -> None:
    """Keep the figures of the last run (for the closing note); printed with -s as well."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = figures
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(name, figures)


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    s = Scenario(home=tmp_path / "home", documents=DOCS)
    s.home.mkdir()
    yield s
    s.stop_workers(timeout=20)
    s.cli("db", "stop")


async def test_workers_sigkilled_at_random_moments(scenario: Scenario) -> None:
    await upload_documents(scenario)
    rng = random.Random(11)
    scenario.start_worker()
    scenario.start_worker()
    kills = 25 if LONG else 5
    next_kill = [rng.uniform(4, 8)]

    async def tick(elapsed: float) -> None:
        if scenario.faults < kills and elapsed > next_kill[0]:
            scenario.kill_random_worker(rng)
            scenario.start_worker()
            next_kill[0] = elapsed + rng.uniform(2, 6)
        while len(scenario.alive()) < 2:
            scenario.start_worker()

    await wait_final(scenario, TIMEOUT, tick)
    scenario.stop_workers()
    figures = await verify(scenario)
    assert figures["faults"] >= 1
    record("sigkill_workers", figures)


async def test_database_restarted_mid_ingest(scenario: Scenario) -> None:
    await upload_documents(scenario)
    scenario.start_worker()
    scenario.start_worker()
    restarts = 3 if LONG else 1
    done = [0]
    next_at = [6.0]

    async def tick(elapsed: float) -> None:
        if done[0] < restarts and elapsed > next_at[0]:
            stop = scenario.cli("db", "stop")
            assert stop.returncode == 0, stop.stderr
            await asyncio.sleep(2)
            start = scenario.cli("db", "start")
            assert start.returncode == 0, start.stderr
            done[0] += 1
            scenario.faults += 1
            next_at[0] = elapsed + 10

    await wait_final(scenario, TIMEOUT, tick)
    assert all(w.poll() is None for w in scenario.workers), "a worker died when the database went away"
    scenario.stop_workers()
    record("database_restart", await verify(scenario))


async def test_listener_connections_terminated(scenario: Scenario) -> None:
    await upload_documents(scenario)
    scenario.start_worker()
    scenario.start_worker()
    dsn = await server_dsn(scenario)

    async def tick(elapsed: float) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            n = await conn.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE application_name LIKE 'listen:%' OR application_name LIKE 'jobs:%'"""
            )
            scenario.faults += int(n or 0)
        finally:
            await conn.close()

    await wait_final(scenario, TIMEOUT, tick)
    assert all(w.poll() is None for w in scenario.workers)
    scenario.stop_workers()
    figures = await verify(scenario)
    assert figures["faults"] > 0
    record("listeners_terminated", figures)


async def test_blob_store_failing_writes(scenario: Scenario) -> None:
    await upload_documents(scenario)
    dsn = await server_dsn(scenario)
    conn = await asyncpg.connect(dsn)
    # A real failure inside the database: a quarter of chunk writes fail while the fault is on.
    await conn.execute(
        """CREATE TABLE fault_counter (n bigint);
           INSERT INTO fault_counter VALUES (0);
           CREATE FUNCTION fail_some_blob_writes() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF random() < 0.25 THEN
                   UPDATE fault_counter SET n = n + 1;
                   RAISE EXCEPTION 'injected fault: blob store write failed';
               END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER fail_some_blob_writes BEFORE INSERT ON blob_chunks
               FOR EACH ROW EXECUTE FUNCTION fail_some_blob_writes();"""
    )
    await conn.close()
    scenario.start_worker()
    scenario.start_worker()
    lifted = [False]

    async def tick(elapsed: float) -> None:
        if not lifted[0] and elapsed > (60 if LONG else 20):
            c = await asyncpg.connect(dsn)
            try:
                await c.execute("DROP TRIGGER fail_some_blob_writes ON blob_chunks")
            finally:
                await c.close()
            lifted[0] = True

    await wait_final(scenario, TIMEOUT, tick)
    c = await asyncpg.connect(dsn)
    try:
        scenario.faults = int(await c.fetchval("SELECT n FROM fault_counter"))
        orphans = await c.fetchval("SELECT count(*) FROM blob_uploads")
    finally:
        await c.close()
    scenario.stop_workers()
    figures = await verify(scenario)
    assert scenario.faults > 0
    figures["interrupted_uploads_left"] = orphans
    record("blob_write_failures", figures)


async def test_replay_while_ingesting(scenario: Scenario) -> None:
    await upload_documents(scenario)
    scenario.start_worker()
    scenario.start_worker()
    replays = [0]

    async def tick(elapsed: float) -> None:
        if replays[0] < (3 if LONG else 1) and elapsed > 5 + 10 * replays[0]:
            result = await asyncio.to_thread(scenario.cli, "replay", "--all")
            assert result.returncode == 0, result.stdout + result.stderr
            replays[0] += 1
            scenario.faults += 1

    await wait_final(scenario, TIMEOUT, tick)
    scenario.stop_workers()
    record("replay_while_ingesting", await verify(scenario))
