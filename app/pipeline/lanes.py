"""Priority lanes of the stage work queue: which lane a job goes into, and which lane a claim prefers.

A person waiting for one small upload must not queue behind a 200-document batch at every stage
(issue 16.3). Every job is in one of two lanes, decided by the dispatcher when it enqueues the job:

* ``interactive``: an upload of at most ``CHRONOS_INTERACTIVE_MAX_BYTES`` (5 MiB) from the API, a
  Directus hook or ``chronos ingest FILE`` -- unless the interactive lane already holds
  ``CHRONOS_INTERACTIVE_DEPTH`` (8) uploads waiting for conversion: a loop of single uploads (a script,
  a Directus backfill) then overflows into the batch lane, so the interactive lane stays short.
* ``batch``: everything else -- the files of a folder ingest or sync (their keys are
  ``folder:<source>:<path>``), larger uploads, and reprocess requests (``chronos reprocess``, which
  asks for many documents at once).
* Later stages (chunk after convert, embed after chunk) go on in the lane of their document's latest
  job: a small upload stays interactive all the way to searchable.

Workers claim the interactive lane first (across stages: an interactive convert job goes before a
batch embed job), except that one claim in every ``CHRONOS_BATCH_SHARE`` (4) prefers the batch lane,
so under a stream of interactive uploads a batch still gets at least a quarter of the claims. Neither
lane is ever left idle while the other has work (a preference, not a filter). ``CHRONOS_LANES=off``
makes claims oldest-first whatever the lane (the same-run baseline of ``chronos bench freshness``).
The lanes are visible in the view ``v_job_lanes`` and in ``jobs.lane``.
"""

from __future__ import annotations

from typing import Literal

from app.catalogue import events as ev
from app.config import LaneSettings

Lane = Literal["interactive", "batch"]
INTERACTIVE: Lane = "interactive"
BATCH: Lane = "batch"
_SINGLE_SOURCES = frozenset({"api", "cli", "directus"})  # sources of one upload at a time


def requested_lane(event: ev.Event, settings: LaneSettings) -> Lane | None:
    """The lane the job made for ``event`` asks for; None: its document's lane goes on.

    For an interactive upload the queue still has the last word (the lane's depth, see the module)."""
    match event:
        case ev.DocumentUploaded():
            folder = (event.key or "").startswith("folder:")
            small = event.size <= settings.interactive_max_bytes
            return INTERACTIVE if event.source in _SINGLE_SOURCES and small and not folder else BATCH
        case ev.ConversionRequested() | ev.ChunkingRequested() | ev.EmbeddingRequested():
            return BATCH
    return None


class Turns:
    """Which lane each claim of one worker prefers: the batch lane once in every ``share`` claims,
    the interactive lane otherwise (None throughout when lanes are off)."""

    def __init__(self, settings: LaneSettings) -> None:
        self.enabled = settings.enabled
        self.share = max(1, settings.batch_share)
        self._count = 0

    def next(self) -> Lane | None:
        if not self.enabled:
            return None
        self._count += 1
        return BATCH if self._count % self.share == 0 else INTERACTIVE
