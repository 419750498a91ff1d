"""The busy-cores profile of ``bench compare`` (app/bench/busy.py) on counters it is fed."""

from __future__ import annotations

import time

from app.bench.busy import BusySampler, read_counters
from app.bench.compare import busy_line


def _fed(samples: list[tuple[float, float, float]]) -> BusySampler:
    """A sampler whose clock and counters replay ``samples`` (at, busy CPU-s, steal CPU-s)."""
    feed = iter(samples)
    current: list[tuple[float, float, float]] = []

    def counters() -> tuple[float, float]:
        current[:] = [next(feed)]
        return current[0][1], current[0][2]

    sampler = BusySampler(interval=3600, counters=counters, clock=lambda: current[0][0], cores=2)
    for _ in samples:
        sampler.sample()
    return sampler


def test_profile_gives_busy_cores_per_window_and_slice() -> None:
    # 0-10 s: one core busy; 10-20 s: both; 2 s of steal over the 20 s.
    sampler = _fed([(100.0 + t, (t if t <= 10 else 10 + 2 * (t - 10)), t / 10) for t in range(0, 21)])
    profile = sampler.profile([110.0, 120.0], parts=2)
    assert profile["process"] == 1.5 and profile["timed"] == 2.0
    assert profile["timed_parts"] == [2.0, 2.0]
    assert profile["steal_share"] == 0.05  # 2 s of the cores' 40 s
    whole = sampler.profile([100.0, 120.0], parts=4)
    assert whole["timed_parts"] == [1.0, 1.0, 2.0, 2.0]  # the slices fall on the nearest samples
    line = busy_line(profile)
    assert "whole process 1.5" in line and "timed phase 2.0 (by tenth: 2.0 2.0)" in line and "steal 5.0%" in line


def test_too_few_samples_give_no_figures() -> None:
    sampler = _fed([(100.0, 5.0, 0.0)])
    assert sampler.profile([100.0, 101.0]) == {"cores": 2}
    assert busy_line(sampler.profile(None)) == ""
    assert sampler.busy_cores(100.0, 100.0) is None


def test_the_real_sampler_reads_the_machine() -> None:
    busy, steal = read_counters()
    assert busy > 0 and steal >= 0
    with BusySampler(interval=0.05) as sampler:
        until = time.monotonic() + 0.5  # long enough for /proc/stat's 10 ms ticks to average out
        while time.monotonic() < until:
            sum(i * i for i in range(10_000))
    assert len(sampler.samples) >= 2
    profile = sampler.profile(None)
    assert profile["process"] is not None and 0 <= profile["process"] <= sampler.cores + 0.5


def test_the_clock_is_monotonic_and_shared_with_the_side_processes() -> None:
    """The sides stamp their timed phase in another process: the clock must be one for every process
    and must not step (the wall clock of this machine once jumped ~20 s forward inside a run, which
    put whole tenths of the timed phase between two samples)."""
    import subprocess
    import sys

    assert BusySampler().clock is time.monotonic
    before = time.monotonic()
    child = float(subprocess.check_output([sys.executable, "-c", "import time; print(time.monotonic())"]))
    after = time.monotonic()
    assert before <= child <= after
