"""Fault suite, documents reworked while workers run: re-chunked and re-embedded under a searching reader,
deleted and uploaded again concurrently, revised and deleted while workers are SIGKILLed (issues 11, 12).

Same machinery as test_faults.py (real ``chronos worker`` processes on the scenario's own embedded
PostgreSQL, embeddings from the OpenAI stand-in), same final ``verify`` (every document final, ``chronos
check`` clean, nothing doubled, replay equal to the live projections). The number of requests, deletions,
revisions and kills is fixed per form, not paced by the clock, so a fast machine is tested as hard as a
slow one. Quick form: 8 documents re-chunked, 8 contents, 6 keys; ``CHRONOS_FAULTS_LONG=1``: more of each.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from app.runtime import open_runtime
from app.services.delete import delete_document
from app.services.upload import IntakeResult, ingest_stream
from events.blobs import aiter_bytes
from tests.faults.harness import (
    LONG,
    TIMEOUT,
    WORDS,
    Scenario,
    make_document,
    record,
    running_job_owners,
    server_dsn,
    upload_documents,
    verify,
    wait_quiet,
)

pytestmark = [pytest.mark.local_models, pytest.mark.faults]

MODEL = "openai:text-embedding-3-small"  # the workers' default with OPENAI_API_KEY set
SMALLER = "openai:text-embedding-3-small@256"  # the re-embedding: the same model at 256 dimensions


async def kill_busy_worker(scenario: Scenario, dsn: str, rng: random.Random, wait_s: float = 10) -> bool:
    """SIGKILL a worker that holds a job (waiting up to ``wait_s`` for one), else any live one."""
    victim: subprocess.Popen[bytes] | None = None
    for _ in range(int(wait_s / 0.25)):
        owners = await running_job_owners(dsn)
        victim = next((w for w in scenario.alive() if w.pid in owners), None)
        if victim is not None:
            break
        await asyncio.sleep(0.25)
    if victim is None:
        return scenario.kill_random_worker(rng)
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait, 10)
    scenario.faults += 1
    return True


def keep_workers(scenario: Scenario, n: int = 2) -> None:
    while len(scenario.alive()) < n:
        scenario.start_worker()


# --- re-chunk and re-embed while a reader searches -------------------------------------------------


@dataclass
class Reader:
    """Searches in a loop; every document it has once seen searchable must be found by every later search."""

    scenario: Scenario
    seen: set[str] = field(default_factory=set)
    rounds: int = 0
    searches: int = 0
    misses: list[str] = field(default_factory=list)
    lagging: int = 0  # most documents seen searchable at once before the index had them
    phase: str = "ingest"  # the request being worked on (for the misses' messages)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with open_runtime(self.scenario.settings, max_size=1) as rt:
            while not self.stop.is_set():
                # one snapshot per round: the statuses, the probes and the searches agree
                async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                    await self.look(conn)
                self.rounds += 1
                await asyncio.sleep(0.25)

    async def look(self, conn: Any) -> None:
        rows = await conn.fetch(
            "SELECT document_id::text AS doc, status FROM documents WHERE document_id = ANY($1::uuid[])",
            self.scenario.ids,
        )
        status = {r["doc"]: r["status"] for r in rows}
        wanted = sorted(d for d in status if (d in self.seen or status[d] == "searchable") and status[d] != "deleted")
        if not wanted:
            return
        # A probe per document: one of its chunks' vectors of the model search answers with. Searching
        # for that vector must return the document (its own chunk is at distance 0).
        probes = await conn.fetch(
            """SELECT DISTINCT ON (c.document_id) c.document_id::text AS doc, v.embedding
               FROM chunks c JOIN vectors v USING (chunk_id) JOIN v_search_models m ON m.active AND m.model = v.model
               WHERE c.document_id = ANY($1::uuid[]) ORDER BY c.document_id, c.ordinal""",
            wanted,
        )
        found: set[str] = set()
        for probe in probes:
            hits = await conn.fetch("SELECT document_id::text AS doc FROM search_chunks($1, 10)", probe["embedding"])
            self.searches += 1
            if probe["doc"] in {h["doc"] for h in hits}:
                found.add(probe["doc"])
        # A document newly searchable in ``documents`` may not be in the index yet (another projection,
        # its own checkpoint): that is counted, not a miss. Once found, it must be found every time.
        self.lagging = max(self.lagging, len({d for d in wanted if d not in self.seen} - found))
        for doc in sorted(self.seen & set(wanted) - found):
            sets = await conn.fetch(
                """SELECT s.model, s.chunk_set_id::text, (SELECT count(*) FROM chunks c
                          WHERE c.document_id = s.document_id AND c.chunk_set_id = s.chunk_set_id) AS chunks
                   FROM vector_sets s WHERE s.document_id = $1::uuid""",
                doc,
            )
            models = await conn.fetch("SELECT model, covered_documents, documents, active FROM v_search_models")
            self.misses.append(
                f"round {self.rounds} ({self.phase}): search did not find {doc} ({status.get(doc)}); "
                f"vector sets {[tuple(r) for r in sets]}, models {[tuple(r) for r in models]}"
            )
        self.seen |= {d for d in found if status[d] == "searchable"}


async def test_rechunk_and_reembed_while_searching(scenario: Scenario) -> None:
    """Re-chunks with unchanged and changed settings and a re-embedding with another model (and, in the
    long form, SIGKILLs during each request) while a reader searches in a loop: the reader always finds
    every searchable document; at the end every searchable document has vectors of the active model."""
    await upload_documents(scenario, count=scenario.documents if LONG else max(4, scenario.documents // 2))
    dsn = await server_dsn(scenario)
    rng = random.Random(21)
    reader = Reader(scenario)
    reading = asyncio.create_task(reader.run())
    keep_workers(scenario)

    async def tick(elapsed: float) -> None:
        keep_workers(scenario)

    # a round's requests follow each other at once; the next round starts when all work is done
    rounds: list[list[tuple[str, ...]]] = [
        [("--stage", "chunk")],  # unchanged settings: ChunkingUnchanged, the vectors stay
        [
            ("--stage", "chunk", "--chunk-size", "64"),  # changed: new chunk sets, switched when embedded
            ("--stage", "embed", "--model", SMALLER),  # a model switch while they are embedded
        ],
    ]
    if LONG:
        rounds += [
            [("--stage", "chunk", "--chunk-size", "512")],  # changed back, embedded with the sticky new model
            [("--stage", "chunk")],
            [("--stage", "embed", "--model", MODEL), ("--stage", "chunk", "--chunk-size", "96")],
            [("--stage", "chunk", "--chunk-size", "200")],
        ]
    kills = 0
    try:
        await wait_quiet(scenario, TIMEOUT, tick)
        for requests in rounds:
            reader.phase = " + ".join(" ".join(args) for args in requests)
            for args in requests:  # one after the other, each while the work of the one before runs
                result = await asyncio.to_thread(scenario.cli, "reprocess", *args, "--all", "--yes", "--json")
                assert result.returncode == 0, result.stdout + result.stderr
                assert json.loads(result.stdout)["requested"] >= len(scenario.ids), (args, result.stdout)
                scenario.faults += 1
            if LONG:  # a worker killed while it re-chunks or re-embeds
                kills += int(await kill_busy_worker(scenario, dsn, rng))
                keep_workers(scenario)
            await wait_quiet(scenario, TIMEOUT, tick)
    finally:
        reader.stop.set()
        await reading
    scenario.stop_workers()
    assert not reader.misses, reader.misses[:10]
    assert reader.rounds > len(rounds) and reader.seen == set(scenario.ids)
    figures = await verify(scenario, reworked=True)
    conn = await asyncpg.connect(dsn)
    try:
        unchanged = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'ChunkingUnchanged'")
        sets = await conn.fetchval(
            "SELECT min(n) FROM (SELECT count(DISTINCT data ->> 'chunk_set_id') AS n FROM events "
            "WHERE type = 'DocumentChunked' GROUP BY stream_id) s"
        )
        active = await conn.fetchval("SELECT model FROM v_search_models WHERE active")
    finally:
        await conn.close()
    assert unchanged >= len(scenario.ids) and sets >= 2, (unchanged, sets)  # the requests did run
    assert active == (MODEL if LONG else SMALLER)
    record(
        "rechunk_reembed_while_searching",
        {**figures, "requests": sum(len(r) for r in rounds), "kills": kills, "reader_rounds": reader.rounds,
         "searches": reader.searches, "misses": 0, "searchable_before_indexed_max": reader.lagging},
        scenario,
    )  # fmt: skip


# --- delete and upload again, concurrently -----------------------------------------------------------


async def test_delete_and_reupload_concurrently(scenario: Scenario) -> None:
    """Contents uploaded several times at once, then deleted and uploaded again concurrently in rounds
    while workers run (and, in the long form, are SIGKILLed): one document per content, whatever the
    order; at the end the last upload of a content is its one live document, a deletion leaves none."""
    rng = random.Random(31)
    contents = [make_document(1000 + i, rng) for i in range(max(4, scenario.documents // 2))]
    results: dict[int, list[IntakeResult]] = {i: [] for i in range(len(contents))}
    dsn = await server_dsn(scenario)
    keep_workers(scenario)
    deletes = uploads = kills = 0
    lock = asyncio.Semaphore(6)

    async with open_runtime(scenario.settings) as rt:

        async def upload(i: int) -> None:
            nonlocal uploads
            name, body = contents[i]
            async with lock:
                results[i].append(
                    await ingest_stream(
                        rt.store, rt.blobs, aiter_bytes(body), filename=name, source="faults", actor="faults"
                    )
                )
            uploads += 1

        async def delete(i: int) -> None:
            nonlocal deletes
            async with lock:
                if await delete_document(rt.store, results[i][0].document_id, "faults", "faults"):
                    deletes += 1

        async def delete_then_upload(i: int) -> None:
            await asyncio.sleep(rng.uniform(0, 1.5))  # somewhere in the pipeline
            await delete(i)
            await asyncio.sleep(rng.uniform(0, 0.5))
            await asyncio.gather(upload(i), upload(i))  # two at once, as two clients would

        # the same bytes three times at once, every content
        await asyncio.gather(*(upload(i) for i in range(len(contents)) for _ in range(3)))
        scenario.ids[:] = sorted({r[0].document_id for r in results.values()})
        for _ in range(6 if LONG else 1):
            await asyncio.gather(*(delete_then_upload(i) for i in range(len(contents))))
            if LONG:
                kills += int(await kill_busy_worker(scenario, dsn, rng))
                keep_workers(scenario)
        # the end: even contents uploaded (after a last deletion), odd ones deleted, all at once
        await asyncio.gather(*(delete_then_upload(i) if i % 2 == 0 else delete(i) for i in range(len(contents))))

    async def tick(elapsed: float) -> None:
        keep_workers(scenario)

    await wait_quiet(scenario, TIMEOUT, tick)
    scenario.stop_workers()
    scenario.faults += deletes + uploads + kills
    per_content = {i: {r.document_id for r in rs} for i, rs in results.items()}
    assert all(len(ids) == 1 for ids in per_content.values()), per_content  # one document per content
    figures = await verify(scenario, reworked=True)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT d.document_id::text AS doc, d.status, d.sha256,
                      (SELECT count(*) FROM chunks c WHERE c.document_id = d.document_id) AS chunks,
                      (SELECT count(*) FROM chunks c JOIN vectors v USING (chunk_id)
                       WHERE c.document_id = d.document_id) AS vectors,
                      (SELECT count(*) FROM chunk_sets s WHERE s.document_id = d.document_id) AS chunk_sets
               FROM documents d"""
        )
    finally:
        await conn.close()
    by_doc = {r["doc"]: dict(r) for r in rows}
    assert len(rows) == len(contents) and len({r["sha256"] for r in rows}) == len(contents), by_doc
    for i, ids in per_content.items():
        row = by_doc[next(iter(ids))]
        if i % 2 == 0:
            assert row["status"] == "searchable" and row["chunks"] > 0, row
            assert row["vectors"] == row["chunks"] and row["chunk_sets"] == 1, row  # nothing doubled
        else:
            assert row["status"] == "deleted" and row["chunks"] == 0 and row["vectors"] == 0, row
    record(
        "delete_reupload_concurrently",
        {**figures, "contents": len(contents), "uploads": uploads, "deletes": deletes, "kills": kills},
        scenario,
    )


# --- revisions and deletions while workers are SIGKILLed ---------------------------------------------


def revision_body(key: int, rev: int, rng: random.Random) -> tuple[bytes, bool]:
    """Revision ``rev`` of key ``key``: Markdown naming both, or (some later revisions) an executable,
    which fails conversion. The first revision is always good."""
    if rev > 0 and (key + rev) % 3 == 2:
        return b"\x7fELF\x02\x01\x01" + rng.randbytes(2048), False
    words = " ".join(rng.choice(WORDS) for _ in range(70))
    return f"# Key {key}\n\n## Revision {rev}\n\n{words} (key {key} rev {rev}).\n".encode(), True


async def test_revisions_and_deletions_while_workers_are_killed(scenario: Scenario) -> None:
    """Keyed uploads: every round gives each key a new revision (some of them bytes that cannot be
    converted) while its last one is still in the pipeline, and SIGKILLs a worker at work; the last round
    comes once the work is done, and right after it some keys are deleted. Each key ends as one document:
    deleted, or serving its newest good revision (failed when its newest revision is a bad one); replay
    equals the live projections."""
    keys = max(12, scenario.documents // 5) if LONG else 6
    revisions = 6 if LONG else 3
    rng = random.Random(41)
    dsn = await server_dsn(scenario)
    results: dict[int, list[IntakeResult]] = {k: [] for k in range(keys)}
    newest_good: dict[int, int] = {}
    kills = 0
    keep_workers(scenario)

    async def tick(elapsed: float) -> None:
        keep_workers(scenario)

    async with open_runtime(scenario.settings) as rt:
        for rev in range(revisions):
            if rev == revisions - 1:
                # Before the last round the work is let finish, so the revision before the last is served:
                # the last round's bad revisions must then leave it serving. (In the rounds before, a
                # revision may be superseded before it is served: its work is cancelled, docs/revisions.md.)
                await wait_quiet(scenario, TIMEOUT, tick)
            for k in range(keys):
                body, good = revision_body(k, rev, rng)
                result = await ingest_stream(rt.store, rt.blobs, aiter_bytes(body), filename=f"key-{k}.md",
                                             source="faults", actor="faults", key=f"faults/key-{k}")  # fmt: skip
                results[k].append(result)
                if good:
                    newest_good[k] = result.revision
            scenario.ids[:] = sorted({rs[0].document_id for rs in results.values()})
            for _ in range(2 if LONG else 1):
                kills += int(await kill_busy_worker(scenario, dsn, rng))
                keep_workers(scenario)
            await asyncio.sleep(rng.uniform(0.5, 2.0))  # the next revision while this one is in the pipeline
        deleted = {k for k in range(keys) if k % 4 == 3}
        for k in sorted(deleted):
            assert await delete_document(rt.store, results[k][0].document_id, "faults", "faults")
    await wait_quiet(scenario, TIMEOUT, tick)
    scenario.stop_workers()
    scenario.faults += kills + keys * (revisions - 1) + len(deleted)
    for k, rs in results.items():
        assert len({r.document_id for r in rs}) == 1, (k, rs)  # one document per key
        assert [r.revision for r in rs] == list(range(1, revisions + 1)), (k, [r.revision for r in rs])
    figures = await verify(scenario, reworked=True)
    conn = await asyncpg.connect(dsn)
    try:
        rows = {
            r["doc"]: dict(r)
            for r in await conn.fetch(
                """SELECT d.document_id::text AS doc, d.status, d.revision, d.serving_revision,
                          coalesce((SELECT string_agg(c.text, ' ') FROM chunks c WHERE c.document_id = d.document_id),
                                   '') AS text,
                          (SELECT count(*) FROM chunks c JOIN vectors v USING (chunk_id)
                           WHERE c.document_id = d.document_id) AS vectors
                   FROM documents d"""
            )
        }
    finally:
        await conn.close()
    assert len(rows) == keys, rows.keys()
    for k, rs in results.items():
        row = rows[rs[0].document_id]
        if k in deleted:
            assert row["status"] == "deleted" and not row["text"] and row["vectors"] == 0, (k, row)
            continue
        serving = newest_good[k]
        assert row["revision"] == revisions and row["serving_revision"] == serving, (k, row, serving)
        assert row["status"] == ("searchable" if serving == revisions else "failed"), (k, row, serving)
        assert f"(key {k} rev {serving - 1})" in row["text"] and row["vectors"] > 0, (k, row, serving)
        stale = [r for r in range(revisions) if r != serving - 1 and f"(key {k} rev {r})" in row["text"]]
        assert not stale, (k, stale, row)
    record(
        "revise_delete_while_killed",
        {**figures, "keys": keys, "revisions": revisions, "deleted_keys": len(deleted), "kills": kills,
         "newest_revision_bad": sum(1 for k in range(keys) if k not in deleted and newest_good[k] != revisions)},
        scenario,
    )  # fmt: skip
