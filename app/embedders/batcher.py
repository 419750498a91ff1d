"""Cross-request batching for a local model: texts from every caller share length-sorted batches.

A document has a handful of chunks; embedded one document at a time, batches are small and their
lengths mixed, so much of the work is padding and per-call overhead. Callers (one per embed job,
several jobs at once) put their texts into one queue; pool threads take batches from it, each
batch the longest texts among the oldest waiting ones, and write the vectors back to their
callers. The window (the oldest ``batch_size * threads`` texts) keeps a caller's short texts from
waiting behind a stream of longer newcomers. Urgent texts (an interactive job's, ``URGENT`` set in
its task: app/pipeline/lanes.py) join the queue ahead of every text that is not urgent, so a small
upload's chunks never wait behind a batch's.

CPU time is each batch's own thread time, shared among its texts by length, so a caller is
charged for its own texts only. A batch that fails fails every caller with a text in it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

Forward = Callable[[list[str]], np.ndarray]  # texts -> (len(texts), dimensions) float32 vectors
URGENT: ContextVar[bool] = ContextVar("chronos_embed_urgent", default=False)
"""Set by the worker in an interactive job's task: ``submit`` then puts the texts first."""


@dataclass
class _Request:
    out: np.ndarray
    remaining: int
    cpu_s: float = 0.0
    error: BaseException | None = None
    future: Future[tuple[np.ndarray, float]] = field(default_factory=Future)


@dataclass
class _Item:
    text: str
    length: int
    request: _Request
    index: int
    urgent: bool = False


class Batcher:
    """Runs ``forward`` over batches drawn from every caller's texts on ``threads`` pool threads."""

    def __init__(
        self,
        forward: Forward,
        *,
        dimensions: int,
        threads: int,
        batch_size: int,
        min_batch: int = 1,
        max_batch_tokens: int | None = None,
        name: str = "chronos-embed",
    ) -> None:
        self.forward = forward
        self.dimensions = dimensions
        self.threads = max(1, threads)
        self.batch_size = max(1, batch_size)
        self.min_batch = max(1, min(min_batch, self.batch_size))
        self.max_batch_tokens = max_batch_tokens
        """Padded tokens (texts x the longest) a batch holds at most (one text at least): a batch on a
        CPU costs per token, so a long batch gains nothing and only keeps the next urgent text waiting
        for a thread (bench freshness under load)."""
        self._pending: list[_Item] = []
        self._running = 0  # pool threads running a batch now
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=name)
        self.batches = 0  # batches run so far (for tests and figures)

    def submit(
        self, texts: Sequence[str], lengths: Sequence[int], urgent: bool | None = None
    ) -> Future[tuple[np.ndarray, float]]:
        """A future of the vectors for ``texts`` (in order) and the CPU seconds spent on them. Nothing
        waits on a thread meanwhile (``asyncio.wrap_future`` it from the event loop). ``urgent``
        (default: ``URGENT`` of the calling context): the texts go ahead of every non-urgent one."""
        urgent = URGENT.get() if urgent is None else urgent
        request = _Request(np.empty((len(texts), self.dimensions), dtype=np.float32), len(texts))
        if not texts:
            request.future.set_result((request.out, 0.0))
            return request.future
        items = [
            _Item(t, max(1, int(n)), request, i, urgent) for i, (t, n) in enumerate(zip(texts, lengths, strict=True))
        ]
        with self._lock:
            if urgent:  # after the urgent texts already waiting, before everything else
                at = next((k for k, item in enumerate(self._pending) if not item.urgent), len(self._pending))
                self._pending[at:at] = items
            else:
                self._pending.extend(items)
        for _ in range(min(self.threads, math.ceil(len(items) / self.min_batch))):
            self._pool.submit(self._drain)
        return request.future

    def run(self, texts: Sequence[str], lengths: Sequence[int]) -> tuple[np.ndarray, float]:
        """``submit`` and wait."""
        return self.submit(texts, lengths).result()

    def _take(self) -> list[_Item]:
        with self._lock:
            if not self._pending:
                return []
            window = self._pending[: self.batch_size * self.threads]
            # Shared among the threads not busy yet: one small document's texts run on every idle core
            # at once (its 5 chunks as 3 + 2 on two threads, not 4 + 1 or 5 + 0).
            idle = max(1, self.threads - self._running)
            size = min(self.batch_size, max(self.min_batch, math.ceil(len(self._pending) / idle)))
            batch: list[_Item] = []
            longest = 0
            for item in sorted(window, key=lambda item: (not item.urgent, -item.length)):
                if len(batch) == size:
                    break
                padded = max(longest, item.length) * (len(batch) + 1)
                if batch and self.max_batch_tokens is not None and padded > self.max_batch_tokens:
                    break
                batch.append(item)
                longest = max(longest, item.length)
            taken = {id(item) for item in batch}
            self._pending = [item for item in self._pending if id(item) not in taken]
            self._running += 1
            return batch

    def _drain(self) -> None:
        """Run batches until nothing is waiting (several pool threads drain side by side)."""
        while batch := self._take():
            cpu_start = time.thread_time()
            try:
                vectors = self.forward([item.text for item in batch])
                error: BaseException | None = None
            except BaseException as exc:  # handed to every caller with a text in this batch
                vectors, error = None, exc
            cpu_s = time.thread_time() - cpu_start
            total = sum(item.length for item in batch)
            finished: list[_Request] = []
            with self._lock:
                self.batches += 1
                self._running -= 1
                for row, item in enumerate(batch):
                    request = item.request
                    if error is not None:
                        request.error = request.error or error
                    else:
                        assert vectors is not None
                        request.out[item.index] = vectors[row]
                    request.cpu_s += cpu_s * item.length / total
                    request.remaining -= 1
                    if request.remaining == 0:
                        finished.append(request)
            for request in finished:  # outside the lock: a future's callbacks may run right here
                if request.error is not None:
                    request.future.set_exception(request.error)
                else:
                    request.future.set_result((request.out, request.cpu_s))
