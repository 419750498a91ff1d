"""The tree sampler splits the PSS peak by process role (where the footprint goes)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator

import psutil

from app.bench.memory import TreeMemory, role, sample_once, tree


def _sleep() -> None:
    time.sleep(30)


@contextlib.contextmanager
def _sleeping_child(method: str) -> Iterator[int]:
    """A child process started with ``method`` that sleeps until the block ends; its pid."""
    child = multiprocessing.get_context(method).Process(target=_sleep, daemon=True)  # type: ignore[attr-defined]
    child.start()
    try:
        assert child.pid is not None
        yield child.pid
    finally:
        child.kill()
        child.join()


def test_the_peak_is_split_by_role_and_adds_up() -> None:
    with _sleeping_child("fork") as pid:
        me = psutil.Process(os.getpid())
        procs = tree(me)
        assert any(p.pid == pid for p in procs)
        into = TreeMemory()
        sample_once(procs, into, with_pss=True)
        parts = into.pss_at_peak_mb
        assert parts["root"] > 0
        assert "other" in parts  # a plain forked child is not a converter
        assert abs(sum(parts.values()) - into.peak_pss_mb) < 0.01
        shown = into.as_dict()["pss_at_peak_mb"]
        assert isinstance(shown, dict) and set(shown) == set(parts)


def test_a_later_smaller_sample_keeps_the_breakdown_of_the_peak() -> None:
    into = TreeMemory(peak_pss_mb=10_000.0, pss_at_peak_mb={"root": 10_000.0})
    sample_once(tree(psutil.Process(os.getpid())), into, with_pss=True)
    assert into.pss_at_peak_mb == {"root": 10_000.0}


def test_roles_of_a_fork_server_tree() -> None:
    with _sleeping_child("forkserver"):
        me = psutil.Process(os.getpid())
        roles = {role(p, p.pid == me.pid) for p in tree(me)}
        assert {"root", "fork server", "converter"} <= roles
