"""Client-side batching of Modal conversions: documents submitted concurrently (by the convert jobs a
worker runs side by side) share one Modal call, so N documents share one container start and one
call's overhead instead of paying them N times.

A batch is sent when it holds ``CHRONOS_MODAL_BATCH`` documents (8) or ``CHRONOS_MODAL_BATCH_MB``
megabytes (64), or ``CHRONOS_MODAL_WAIT_MS`` milliseconds (500) after its first document arrived,
whichever comes first (the reasons for these figures are in docs/convert.md). A document larger than
the byte cap travels alone. Calls are grouped by their timeout, so one document's limit is never
imposed on another's.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app import config
from app.convert import modal_client
from app.convert.modal_client import ModalItem, Outcome

log = logging.getLogger(__name__)

# Batch caps: Settings.modal (CHRONOS_MODAL_BATCH, CHRONOS_MODAL_BATCH_MB, CHRONOS_MODAL_WAIT_MS), read
# when a batcher is made; these override them (tests).
MAX_DOCS: int | None = None
MAX_BYTES: int | None = None
WAIT_S: float | None = None

Send = Callable[[list[ModalItem], float, str], Awaitable[list[Outcome]]]


@dataclass
class _Batch:
    timeout_s: float
    gpu: str
    items: list[ModalItem] = field(default_factory=list)
    futures: list[asyncio.Future[Outcome]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Collects submissions into batches and sends each with ``send`` (``call_modal``)."""

    def __init__(
        self,
        send: Send | None = None,
        *,
        max_docs: int | None = None,
        max_bytes: int | None = None,
        wait_s: float | None = None,
    ) -> None:
        self.send: Send = send or _call_modal
        modal = config.current().modal
        self.max_docs = max_docs if max_docs is not None else MAX_DOCS if MAX_DOCS is not None else modal.batch
        self.max_bytes = (max_bytes if max_bytes is not None else MAX_BYTES if MAX_BYTES is not None
                          else int(modal.batch_mb * 1024 * 1024))  # fmt: skip
        self.wait_s = wait_s if wait_s is not None else WAIT_S if WAIT_S is not None else modal.wait_ms / 1000
        if self.max_docs < 1 or self.max_bytes < 1 or self.wait_s < 0:
            raise ValueError(
                "Modal batch caps must be positive (CHRONOS_MODAL_BATCH, CHRONOS_MODAL_BATCH_MB, CHRONOS_MODAL_WAIT_MS)"
            )
        self._open: dict[tuple[float, str], _Batch] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.calls = 0  # batches sent (for benchmarks and tests)

    async def submit(self, item: ModalItem, timeout_s: float, gpu: str = "A10G") -> Outcome:
        """The outcome of converting ``item`` in whichever batch it joins."""
        loop = asyncio.get_running_loop()
        size = item.size
        key = (timeout_s, gpu)
        batch = self._open.get(key)
        if batch is not None and batch.items and batch.size + size > self.max_bytes:
            self._flush(batch)
            batch = None
        if batch is None:
            batch = _Batch(timeout_s, gpu)
            batch.timer = loop.call_later(self.wait_s, self._flush, batch)
            self._open[key] = batch
        future: asyncio.Future[Outcome] = loop.create_future()
        batch.items.append(item)
        batch.futures.append(future)
        batch.size += size
        if len(batch.items) >= self.max_docs or batch.size >= self.max_bytes:
            self._flush(batch)
        return await future

    def _flush(self, batch: _Batch) -> None:
        key = (batch.timeout_s, batch.gpu)
        if self._open.get(key) is batch:
            del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if not batch.items:
            return
        self.calls += 1
        task = asyncio.get_running_loop().create_task(self._send(batch), name="modal-batch")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        log.info("sending a batch to Modal", extra={"documents": len(batch.items), "bytes": batch.size})
        try:
            outcomes = await self.send(batch.items, batch.timeout_s, batch.gpu)
        except Exception as exc:  # a bug in the sender: never leave a submitter waiting
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, outcome in zip(batch.futures, outcomes, strict=True):
            if not future.done():  # a submitter that gave up (cancelled) gets nothing
                future.set_result(outcome)


async def _call_modal(items: list[ModalItem], timeout_s: float, gpu: str) -> list[Outcome]:
    return await modal_client.call_modal(items, timeout_s, gpu)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = weakref.WeakKeyDictionary()


def batcher() -> Batcher:
    """This event loop's batcher (every convert job of a worker process shares it)."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(loop)
    if found is None:
        found = _batchers[loop] = Batcher()
    return found
