"""Peak memory of a process tree (a process and every descendant), sampled in a background thread.

Chronos converts in forked child processes (fork server -> converter processes), so the memory a run
needs is the whole tree's, not the parent's. Two sums are kept per sample:

* ``rss``: resident set sizes added up. Pages shared between a parent and its forked children are
  counted once per process, so this over-states the tree; it is what ``ps``/``top`` users expect.
* ``pss``: proportional set sizes (shared pages split between the processes sharing them); the sum
  is the tree's real footprint. Reading it makes the kernel walk the page tables (~35 ms for a
  1.5 GB process), so it is sampled only every ``pss_interval`` seconds (2 s): its peak is coarser.

The peak is the largest sum seen; an allocation burst shorter than the interval can be missed.
RSS sampling itself is cheap (~30 µs a process), so the sampler does not slow what it measures.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import psutil

logger = logging.getLogger(__name__)
MB = 1024 * 1024


@dataclass
class TreeMemory:
    """Peaks of one sampled process tree, in MB."""

    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    peak_processes: int = 0
    samples: int = 0
    root_peak_rss_mb: float = 0.0  # the sampled process itself
    largest_child_rss_mb: float = 0.0  # the largest single descendant (e.g. a Docling converter process)
    # PSS by role at the sample where the tree's PSS peaked: where the footprint goes
    pss_at_peak_mb: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_pss_mb": round(self.peak_pss_mb, 1),
            "peak_processes": self.peak_processes,
            "samples": self.samples,
            "root_peak_rss_mb": round(self.root_peak_rss_mb, 1),
            "largest_child_rss_mb": round(self.largest_child_rss_mb, 1),
            "pss_at_peak_mb": {role: round(mb, 1) for role, mb in sorted(self.pss_at_peak_mb.items())},
        }


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def role(proc: psutil.Process, is_root: bool) -> str:
    """What a process of the tree is, for the breakdown: ``root``, ``fork server``, ``resource
    tracker``, ``converter`` (a process forked from the fork server) or ``other``."""
    if is_root:
        return "root"
    try:
        cmdline = " ".join(proc.cmdline())
        parent = proc.parent()
        parent_cmdline = " ".join(parent.cmdline()) if parent is not None else ""
    except (psutil.Error, OSError):
        return "other"
    if "forkserver" in parent_cmdline:  # a forked child keeps the fork server's command line
        return "converter"
    if "forkserver" in cmdline:
        return "fork server"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    return "other"


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def sample_once(procs: list[psutil.Process], into: TreeMemory, with_pss: bool = True) -> None:
    """Add one sample; ``procs[0]`` is the root, the rest its descendants."""
    rss = pss = 0.0
    alive = 0
    by_role: dict[str, float] = {}
    for i, proc in enumerate(procs):
        try:
            this = float(proc.memory_info().rss) / MB
        except (psutil.Error, OSError):
            continue
        if with_pss:
            share = _pss_mb(proc.pid)
            pss += share
            name = role(proc, i == 0)
            by_role[name] = by_role.get(name, 0.0) + share
        rss += this
        alive += 1
        if i == 0:
            into.root_peak_rss_mb = max(into.root_peak_rss_mb, this)
        else:
            into.largest_child_rss_mb = max(into.largest_child_rss_mb, this)
    into.samples += 1
    into.peak_rss_mb = max(into.peak_rss_mb, rss)
    if with_pss and pss > into.peak_pss_mb:
        into.peak_pss_mb = pss
        into.pss_at_peak_mb = by_role
    into.peak_processes = max(into.peak_processes, alive)


class TreeSampler:
    """``with TreeSampler(pid) as s: ...`` then ``s.result``: the tree's peaks while the block ran."""

    def __init__(self, pid: int, interval: float = 0.2, *, pss_interval: float | None = 2.0) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.pss_interval = pss_interval
        self.result = TreeMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-sampler-{pid}", daemon=True)

    def _loop(self) -> None:
        last_pss = float("-inf")
        while not self._stop.is_set():
            now = time.monotonic()
            with_pss = self.pss_interval is not None and now - last_pss >= self.pss_interval
            if with_pss:
                last_pss = now
            sample_once(tree(self.root), self.result, with_pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
