"""Stage workers: claim jobs under a lease, run the stage, commit results and the job's end together.

* Any number of worker processes share the queue (``FOR UPDATE SKIP LOCKED``); each job is held by
  one worker at a time under a lease that a heartbeat extends while the stage runs.
* A killed worker's job is claimed again once its lease expires; its result event ids are
  deterministic, so a job that did record its result is never recorded (or paid for) twice.
* Retries back off exponentially up to ``max_attempts``, then a final failure event is appended.
* SIGTERM: stop claiming, let in-flight jobs finish for ``grace_s``, release the rest, exit.
* Documents flow through rather than stage by stage: a free slot takes the job furthest along
  (embed, then chunk, then convert), and with several stages no stage holds every slot, so a
  conversion (one core, in a child process) runs beside an embedding (the model, in-process) and
  the first documents are searchable while later ones still convert.
* One slow document never holds back the others: a convert job running longer than
  ``CHRONOS_CONVERT_SLOW_S`` stops counting against the convert stage's slots (the converter pool
  starts an extra process for the next one, ``app.convert.local``), and convert jobs for uploads
  that need no converter (empty, unsupported) are taken even while the convert slots are busy.
* Fresh under load: every job is in a lane (``app/pipeline/lanes.py``); a claim takes the interactive
  lane first across stages (a small upload's convert job goes before a batch's embed jobs), with a
  bounded share for the batch lane, and an interactive job's texts go to the front of the embedder's
  queue (``app.embedders.batcher.URGENT``). While every slot holds a batch-lane job, one more, the
  *express slot*, takes interactive jobs only, so a small upload never waits for a batch job to end
  at any stage (its conversion waits at most for the converter process's current document, its
  texts go first in the embedder's queue); it never runs beside a free slot, so interactive work alone
  stays within ``concurrency``. ``CHRONOS_LANES=off`` has no express slot.
* Embed jobs are taken several at a time (``CHRONOS_EMBED_JOBS``) and run side by side in one slot:
  a document has a handful of chunks, too few to keep the embedder's threads busy on its own.
* A ``Worker`` is the job runner only: claim, run the stage, heartbeat, record. It is woken by the
  ``chronos_jobs`` notification through the process's hub (and polls). The dispatcher subscription
  (events -> jobs), the projections and the warm-up run beside it as services of the same
  supervisor (``app/pipeline/backend.py``), so a single ``chronos worker`` is a complete back end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from app.embedders.batcher import URGENT
from app.pipeline import jobs, lanes
from app.pipeline.jobs import Job
from app.pipeline.stages import Outcome, run_stage
from app.runtime import Runtime
from events.hub import wait_any

logger = logging.getLogger(__name__)
STAGE_PRIORITY = ("embed", "chunk", "convert")  # furthest along first
HUB_PREFIX = "chronos-hub:"  # a worker process's hub connection: chronos-hub:worker:<host>:<pid>

StageRunner = Callable[[Runtime, Job, str], Awaitable[Outcome]]


def default_owner() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


class Worker:
    def __init__(
        self,
        rt: Runtime,
        *,
        stages: tuple[str, ...] = ("convert", "chunk", "embed"),
        concurrency: int = 2,
        owner: str | None = None,
        lease_s: float = 120.0,
        poll_interval: float = 1.0,
        grace_s: float = 30.0,
        runner: StageRunner = run_stage,
        express: bool | None = None,
    ) -> None:
        self.rt = rt
        self.stages = list(stages)
        self.concurrency = concurrency
        self.owner = owner or default_owner()
        self.lease_s = lease_s
        self.poll_interval = poll_interval
        self.grace_s = grace_s
        self.runner = runner
        self.processed = 0
        self.in_flight: dict[object, Job] = {}
        self._claim_lock = asyncio.Lock()
        self._turns = lanes.Turns(rt.settings.lanes)
        self._busy_slots: dict[str, int] = {}  # slots working on each stage (a slot may hold several embed jobs)
        self.express = rt.settings.lanes.enabled if express is None else express
        self._batch_slots = 0  # ordinary slots holding batch-lane jobs now
        self._express_wake = asyncio.Event()  # set when the last ordinary slot took a batch job
        self._express_jobs: set[object] = set()  # job ids the express slot runs now
        self.express_runs = 0  # jobs the express slot ran (for tests and the bench)
        self._started: dict[object, float] = {}  # job id -> when this worker started running it (monotonic)
        from app.convert.local import slow_after_s

        self.slow_convert_s = slow_after_s()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the slots until ``stop`` is set; then let in-flight jobs finish for ``grace_s``, release
        the rest and return."""
        stop_claiming = asyncio.Event()  # set on stop (or cancellation): slots claim no more
        self.rt.hub.rename(f"{HUB_PREFIX}{self.owner}")  # how /readyz sees a connected stage worker
        async with self.rt.hub.running():
            slots = [asyncio.create_task(self._slot(stop_claiming), name=f"slot-{i}") for i in range(self.concurrency)]
            if self.express:
                slots.append(asyncio.create_task(self._express_slot(stop_claiming), name="slot-express"))
            try:
                await stop.wait()
            finally:
                stop_claiming.set()
                await self._shut_down(slots)

    async def _shut_down(self, slots: list[asyncio.Task[None]]) -> None:
        _done, pending = await asyncio.wait(slots, timeout=self.grace_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job in list(self.in_flight.values()):
            with contextlib.suppress(Exception):
                await jobs.release(self.rt.pool, job, self.owner)

    def _stage_limit(self) -> int:
        """Slots one stage may hold at once: all of them when the worker runs one stage, else all but
        one, so the other stages always have a slot."""
        return self.concurrency if len(self.stages) == 1 else max(1, self.concurrency - 1)

    async def _claim(self) -> list[Job]:
        """Jobs of one stage (one job, or several embed jobs) in one round trip: among the stages below
        their slot limit, the lane whose turn it is first (app/pipeline/lanes.py), then the stage
        furthest along, then the oldest. Claims of one worker take turns (``_claim_lock``), so the
        slot counts they read are never stale."""
        async with self._claim_lock:
            limit = self._stage_limit()
            open_stages = [
                stage
                for stage in sorted(self.stages, key=STAGE_PRIORITY.index)
                if self._busy_slots.get(stage, 0) - self._slow(stage) < limit
            ]
            claimed: list[Job] = []
            if open_stages:
                claimed = await jobs.claim(
                    self.rt.pool,
                    open_stages,
                    self.owner,
                    self.lease_s,
                    max(1, self.rt.settings.embed_jobs),
                    prefer=self._turns.next(),
                    several=["embed"],
                )
            if not claimed and "convert" in self.stages and "convert" not in open_stages:
                return await self._claim_needing_no_converter()
            for job in claimed:
                self.in_flight[job.job_id] = job
            if claimed:
                self._busy_slots[claimed[0].stage] = self._busy_slots.get(claimed[0].stage, 0) + 1
            return claimed

    def _slow(self, stage: str) -> int:
        """Convert jobs of this worker running for longer than ``slow_convert_s``: they step aside."""
        if stage != "convert":
            return 0
        since = time.monotonic() - self.slow_convert_s
        return sum(
            1
            for job_id, job in self.in_flight.items()
            if job.stage == "convert" and job_id not in self._express_jobs and self._started.get(job_id, since) < since
        )

    async def _claim_needing_no_converter(self) -> list[Job]:
        from app.convert.sniff import SUPPORTED_MEDIA_TYPES

        claimed = await jobs.claim_needing_no_converter(
            self.rt.pool, self.owner, self.lease_s, sorted(SUPPORTED_MEDIA_TYPES)
        )
        for job in claimed:
            self.in_flight[job.job_id] = job
        if claimed:
            self._busy_slots["convert"] = self._busy_slots.get("convert", 0) + 1
        return claimed

    async def _slot(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            woken = self.rt.hub.wakeup(jobs.JOBS_CHANNEL)  # before claiming: a job queued after it wakes us
            try:
                claimed = await self._claim()
            except Exception as exc:  # database down: wait and try again, never die
                logger.warning("could not claim a job: %s", exc, extra={"action": "claim", "error": str(exc)})
                await wait_any(min(self.poll_interval * 5, 10.0), stop)
                continue
            if not claimed:
                await wait_any(self.poll_interval, woken, stop)
                continue
            batch = claimed[0].lane != lanes.INTERACTIVE
            if batch:
                self._batch_slots += 1
                if self._batch_slots >= self.concurrency:
                    self._express_wake.set()
            try:
                await self._run_claimed(claimed)
            finally:
                self._busy_slots[claimed[0].stage] -= 1
                if batch:
                    self._batch_slots -= 1

    async def _express_slot(self, stop: asyncio.Event) -> None:
        """Interactive jobs only, and only while every ordinary slot holds a batch job."""
        order = sorted(self.stages, key=STAGE_PRIORITY.index)
        while not stop.is_set():
            woken = self.rt.hub.wakeup(jobs.JOBS_CHANNEL)
            self._express_wake.clear()
            if self._batch_slots < self.concurrency:
                # A slot is free or holds interactive work: the ordinary slots take the next upload.
                await wait_any(self.poll_interval, self._express_wake, stop)
                continue
            try:
                limit = max(1, self.rt.settings.embed_jobs)
                claimed = await jobs.claim_interactive(
                    self.rt.pool, order, self.owner, self.lease_s, limit, several=["embed"]
                )
            except Exception as exc:  # database down: wait and try again, never die
                logger.warning("could not claim a job: %s", exc, extra={"action": "claim", "error": str(exc)})
                await wait_any(min(self.poll_interval * 5, 10.0), stop)
                continue
            if not claimed:
                await wait_any(self.poll_interval, woken, stop)
                continue
            for job in claimed:
                self.in_flight[job.job_id] = job
                self._express_jobs.add(job.job_id)
            try:
                await self._run_claimed(claimed)
            finally:
                self._express_jobs.difference_update(job.job_id for job in claimed)
                self.express_runs += len(claimed)

    async def _run_claimed(self, claimed: list[Job]) -> None:
        results = await asyncio.gather(*(self._work(job) for job in claimed), return_exceptions=True)
        for job, result in zip(claimed, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):  # never let one job take a slot down
                logger.error("worker slot failed on job %s", job.job_id, exc_info=result)

    async def _work(self, job: Job) -> None:
        self.in_flight[job.job_id] = job
        self._started[job.job_id] = time.monotonic()
        if self._turns.enabled and job.lane == lanes.INTERACTIVE:
            URGENT.set(True)  # this job's task only: its texts go first in the embedder's queue
        heartbeat = asyncio.create_task(self._heartbeat(job))
        try:
            try:
                outcome = await self.runner(self.rt, job, self.owner)
            except asyncio.CancelledError:
                # Shutting down past the grace period: give the job back for another worker.
                with contextlib.suppress(Exception):
                    await asyncio.shield(jobs.release(self.rt.pool, job, self.owner))
                raise
            except Exception as exc:  # a bug or an infrastructure error: retry later, keep running
                logger.exception(
                    "stage %s failed unexpectedly for %s",
                    job.stage,
                    job.document_id,
                    extra={"action": job.stage, "document_id": str(job.document_id), "attempt": job.attempts},
                )
                from app.pipeline.stages import StageFailure, failure_outcome

                outcome = failure_outcome(
                    job, self.owner, StageFailure("InternalError", f"{type(exc).__name__}: {exc}", retryable=True)
                )
            try:
                await self._record(job, outcome)
                self.processed += 1
            except _LeaseLost:
                logger.warning("job %s was taken over by another worker; its result is theirs to record", job.job_id)
            except Exception as exc:  # database unreachable: the lease expires and the job is retried
                logger.warning("could not record job %s: %s", job.job_id, exc, extra={"error": str(exc)})
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.in_flight.pop(job.job_id, None)
            self._started.pop(job.job_id, None)

    async def _record(self, job: Job, outcome: Outcome) -> None:
        """Append the outcome's events and end the job in one transaction (append first)."""
        async with self.rt.pool.acquire() as conn, conn.transaction():
            last = 0
            if outcome.events:
                result = await self.rt.store.append(job.stream, outcome.events, conn=conn)
                last = result.last_position
            if outcome.status == "retry":
                ok = await jobs.retry_later(conn, job, self.owner, outcome.error or "", outcome.retry_in)
            else:
                ok = await jobs.finish(conn, job, self.owner, outcome.status, outcome.error)
            if not ok:
                # Our lease was lost (we were too slow and another worker took the job): record
                # nothing; the current holder records the result.
                raise _LeaseLost()
        if last:
            self.rt.store.committed(last)
        logger.info(
            "%s %s: %s",
            job.stage,
            job.document_id,
            outcome.status,
            extra={"action": job.stage, "document_id": str(job.document_id), "status": outcome.status},
        )

    async def _heartbeat(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await jobs.extend(self.rt.pool, job, self.owner, self.lease_s):
                    logger.warning("lost the lease on job %s", job.job_id)
                    return
            except Exception as exc:
                logger.warning("could not extend the lease on job %s: %s", job.job_id, exc)


class _LeaseLost(Exception):
    pass
