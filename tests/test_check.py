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
