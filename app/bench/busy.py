"""How many of the machine's cores a benchmark side kept busy, over its run: where its wall time
exceeds its CPU floor.

A thread reads the machine-wide CPU counters (``/proc/stat`` through ``psutil.cpu_times``) every
``interval`` seconds. Machine-wide on purpose: a side's work is spread over its own processes and the
PostgreSQL server, and on a quiet machine nothing else runs (on a busy one the figures are upper
bounds, as every figure of these benches). *Steal* — time the hypervisor gave to another guest while
this one wanted to run — is not counted as busy and is reported on its own: it slows a run without
showing in its CPU-seconds.

A side reports its timed phase as ``timed_window`` (``time.monotonic()`` at its start and end: on Linux
CLOCK_MONOTONIC is one clock for every process, and unlike ``time.time()`` it does not step — this
machine's wall clock once jumped ~20 s forward inside a 40 s run); the profile gives the busy cores
over the whole process, over the timed phase and over each tenth of it.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    busy_s: float  # CPU-seconds the machine spent working, all cores, since boot
    steal_s: float


def read_counters() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine since boot. Busy: user, nice, system, irq and
    softirq time (guest time is inside user); idle, iowait and steal are not busy."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy), float(getattr(t, "steal", 0.0))


@dataclass
class BusySampler:
    interval: float = 0.5
    counters: Callable[[], tuple[float, float]] = read_counters
    clock: Callable[[], float] = time.monotonic
    cores: int = field(default_factory=lambda: psutil.cpu_count() or 1)
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="busy-sampler", daemon=True)

    def sample(self) -> None:
        busy, steal = self.counters()
        self.samples.append(Sample(self.clock(), busy, steal))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> BusySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def busy_cores(self, start: float, end: float) -> float | None:
        """Average cores busy between the samples closest to ``start`` and ``end``; None if the
        window holds fewer than two samples."""
        a, b = self._nearest(start), self._nearest(end)
        if a is None or b is None or b.at <= a.at:
            return None
        return round((b.busy_s - a.busy_s) / (b.at - a.at), 2)

    def steal_share(self, start: float, end: float) -> float | None:
        """Steal as a share of the cores' time in the window."""
        a, b = self._nearest(start), self._nearest(end)
        if a is None or b is None or b.at <= a.at:
            return None
        return round((b.steal_s - a.steal_s) / ((b.at - a.at) * self.cores), 4)

    def _nearest(self, at: float) -> Sample | None:
        if not self.samples:
            return None
        times = [s.at for s in self.samples]
        i = bisect.bisect_left(times, at)
        candidates = [self.samples[j] for j in (i - 1, i) if 0 <= j < len(self.samples)]
        return min(candidates, key=lambda s: abs(s.at - at))

    def profile(self, window: list[float] | None, parts: int = 10) -> dict[str, Any]:
        """Busy cores over the whole sampling, over ``window`` (the side's timed phase) and each of its
        ``parts`` equal slices, and the steal share over the whole sampling."""
        if len(self.samples) < 2:
            return {"cores": self.cores}
        first, last = self.samples[0].at, self.samples[-1].at
        out: dict[str, Any] = {
            "cores": self.cores,
            "interval_s": self.interval,
            "process": self.busy_cores(first, last),
            "steal_share": self.steal_share(first, last),
        }
        if window:
            start, end = window
            out["timed"] = self.busy_cores(start, end)
            step = (end - start) / parts
            out["timed_parts"] = [self.busy_cores(start + i * step, start + (i + 1) * step) for i in range(parts)]
        return out
