"""``chronos check`` finds what is wrong (and nothing when all is well)."""

from __future__ import annotations

import uuid

import asyncpg

from app.check import run_checks
from events import EventStore, NewEvent, PgBlobStore
from events.subscription import Subscription


async def test_clean_log_has_no_findings(store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool) -> None:
    ref = await blobs.put_bytes(b"hello")
    upload = {"document_id": str(uuid.uuid4()), "blob": ref.to_json()}
    await store.append("document-x", [NewEvent("DocumentUploaded", upload), NewEvent("Other", {})], 0)
    report = await run_checks(pool)
    assert report.findings == []
    assert report.stats["events"] == 2 and report.stats["referenced_blobs"] == 1


async def test_finds_gaps_duplicates_missing_and_garbage(
    store: EventStore, blobs: PgBlobStore, pool: asyncpg.Pool, dsn: str
) -> None:
    # A foreign writer inserts a version gap directly (the store API cannot).
    await pool.execute(
        "INSERT INTO events (event_id, stream_id, stream_version, type, data) VALUES ($1, 's-gap', 3, 'X', '{}')",
        uuid.uuid4(),
    )
    job = {"job_id": "j-1"}
    await store.append(
        "document-y",
        [
            NewEvent("DocumentConverted", {"markdown": {"sha256": "f" * 64}}, job),
            NewEvent("DocumentConverted", {}, job),
        ],
    )
    await blobs.put_bytes(b"nobody points at me")
    sub = Subscription(store, "lagging", _noop)
    await sub.checkpoint()
    report = await run_checks(pool)
    found = {f.check: f for f in report.findings}
    assert found["stream_versions"].severity == "error" and "s-gap" in found["stream_versions"].examples[0]
    assert found["duplicate_results"].severity == "error"
    assert found["missing_blobs"].examples == ["f" * 64]
    assert found["unreferenced_blobs"].severity == "warning"
    assert found["subscription_behind"].severity == "warning"
    assert report.stats["subscriptions_behind"]["lagging"] == 3


async def _noop(conn: object, events: object) -> None:
    return None


async def test_names_the_open_transaction_that_holds_committed_events_back(
    store: EventStore, pool: asyncpg.Pool, dsn: str
) -> None:
    """The log is read below the server's oldest open transaction: one forgotten transaction with an id
    (here in the same database; any database of the server does the same) stops every projection."""
    await store.append("document-a", [NewEvent("Other", {})])
    forgotten = await asyncpg.connect(dsn, server_settings={"application_name": "forgotten-report"})
    try:
        tx = forgotten.transaction()
        await tx.start()
        await forgotten.fetchval("SELECT pg_current_xact_id()")  # takes a transaction id, as any write does
        await store.append("document-b", [NewEvent("Other", {}), NewEvent("Other", {})])  # committed

        report = await run_checks(pool, held_back_warn_s=0)
        (held,) = [f for f in report.findings if f.check == "held_back"]
        assert held.severity == "warning" and held.message.startswith("2 committed event(s)")
        assert "forgotten-report" in held.examples[0] and "idle in transaction" in held.examples[0]
        assert report.stats["held_back_events"] == 2
        # A moment's hold (a concurrent append) is not worth a warning.
        report = await run_checks(pool)
        assert not [f for f in report.findings if f.check == "held_back"]
        assert report.stats["held_back_events"] == 2
        await tx.rollback()
    finally:
        await forgotten.close()
    report = await run_checks(pool, held_back_warn_s=0)
    assert not [f for f in report.findings if f.check == "held_back"] and report.stats["held_back_events"] == 0
