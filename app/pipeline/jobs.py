"""The stage work queue (table ``jobs``): enqueue, claim under a lease, extend, finish, retry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.catalogue import ids
from events.sqlfiles import query
from events.types import DbConn

JOBS_CHANNEL = "chronos_jobs"


@dataclass(frozen=True)
class Job:
    job_id: uuid.UUID
    document_id: uuid.UUID
    stage: str
    trigger_event_id: uuid.UUID
    trigger_position: int
    params: dict[str, Any]
    attempts: int
    max_attempts: int
    lane: str = "batch"  # "interactive" | "batch" (app/pipeline/lanes.py)

    @property
    def key(self) -> str:
        return str(self.job_id)

    @property
    def stream(self) -> str:
        return ids.stream_for(self.document_id)

    def result_id(self, kind: str) -> uuid.UUID:
        """Deterministic id of this job's result event of ``kind`` (see ids.result_event_id)."""
        return ids.result_event_id(self.key, kind)


async def enqueue(
    conn: DbConn,
    *,
    document_id: str,
    stage: str,
    trigger_event_id: uuid.UUID,
    trigger_position: int,
    params: dict[str, Any] | None = None,
    max_attempts: int = 4,
    lane: str | None = "batch",
    interactive_depth: int = 8,
) -> uuid.UUID:
    """Queue the job (once: its id is derived from the trigger). ``lane``: the lane asked for
    (``interactive`` is granted while the interactive lane holds fewer than ``interactive_depth``
    uploads waiting for conversion), or None: the lane of the document's latest job."""
    job_id = ids.job_id_for(trigger_event_id, stage)
    await conn.execute(
        query("jobs", "enqueue"),
        job_id,
        uuid.UUID(document_id),
        stage,
        trigger_event_id,
        trigger_position,
        params or {},
        max_attempts,
        lane,
        interactive_depth,
    )
    return job_id


def _job(row: asyncpg.Record) -> Job:
    return Job(
        job_id=row["job_id"],
        document_id=row["document_id"],
        stage=row["stage"],
        trigger_event_id=row["trigger_event_id"],
        trigger_position=row["trigger_position"],
        params=row["params"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        lane=row["lane"],
    )


async def claim(
    pool: asyncpg.Pool,
    stages: list[str],
    owner: str,
    lease_s: float,
    limit: int = 1,
    *,
    prefer: str | None = None,
    several: list[str] | None = None,
) -> list[Job]:
    """Claim the best job among ``stages`` (in the order given: the first is preferred), the lane
    ``prefer`` first (None: oldest first whatever the lane), and with it up to ``limit - 1`` more of
    the same stage when that stage is one of ``several`` (default: any of ``stages``). One round trip."""
    rows = await pool.fetch(
        query("jobs", "claim"), stages, owner, float(lease_s), limit, prefer, stages if several is None else several
    )
    return [_job(r) for r in rows]


async def claim_interactive(
    pool: asyncpg.Pool, stages: list[str], owner: str, lease_s: float, limit: int = 1, *, several: list[str]
) -> list[Job]:
    """The oldest ready interactive-lane job among ``stages`` (the first preferred), with up to
    ``limit - 1`` more of the same stage when it is one of ``several``: the express slot's claim."""
    rows = await pool.fetch(query("jobs", "claim_interactive"), stages, owner, float(lease_s), limit, several)
    return [_job(r) for r in rows]


async def claim_needing_no_converter(
    pool: asyncpg.Pool, owner: str, lease_s: float, supported: list[str], limit: int = 1
) -> list[Job]:
    """Convert jobs whose upload is empty or not a supported type (the stage fails them at once)."""
    rows = await pool.fetch(query("jobs", "claim_needing_no_converter"), owner, float(lease_s), limit, supported)
    return [_job(r) for r in rows]


async def extend(pool: asyncpg.Pool, job: Job, owner: str, lease_s: float) -> bool:
    return await pool.fetchval(query("jobs", "extend"), job.job_id, owner, float(lease_s)) is not None


async def finish(conn: DbConn, job: Job, owner: str, status: str, error: str | None = None) -> bool:
    return await conn.fetchval(query("jobs", "finish"), job.job_id, owner, status, error) is not None


async def retry_later(conn: DbConn, job: Job, owner: str, error: str, delay_s: float) -> bool:
    return await conn.fetchval(query("jobs", "retry_later"), job.job_id, owner, error, float(delay_s)) is not None


async def release(pool: asyncpg.Pool, job: Job, owner: str) -> bool:
    return await pool.fetchval(query("jobs", "release"), job.job_id, owner) is not None
