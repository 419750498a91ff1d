"""CPU-seconds of a benchmark side: its whole process tree and the PostgreSQL server's share.

* The side's tree: ``getrusage(RUSAGE_CHILDREN)`` of this process before and after the side ran.
  It counts every descendant that ended and was waited for (the side, its fork server, converter
  processes): a side is run to its end, so that is all of them.
* The server: the postmaster's own CPU, its ended children's (``/proc`` cutime/cstime: backends of
  closed connections) and its live children's (checkpointer, WAL writer, open backends), read before
  and after. Only the embedded server of ``CHRONOS_HOME`` can be read this way (``DATABASE_URL`` set:
  None). Anything else using that server meanwhile is counted too, so run on a quiet server.

The *floor* is the wall time the run would need if every core were busy all the time:
CPU-seconds / cores; ``wall / floor`` says how far the run is from it (1.0 = every core busy).
"""

from __future__ import annotations

import contextlib
import os
import resource

import psutil

from app.config import Settings


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _postmaster() -> psutil.Process | None:
    settings = Settings.from_env()
    if settings.database_url:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        return psutil.Process(int((settings.pgdata / "postmaster.pid").read_text().splitlines()[0]))
    return None


def server_cpu_s() -> float | None:
    """The embedded server's CPU-seconds so far (its own, ended and live children's); None: not ours."""
    server = _postmaster()
    if server is None:
        return None
    try:
        own = server.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in server.children(recursive=False):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                total += times.user + times.system
        return float(total)
    except psutil.Error:
        return None


def floor_figures(tree_s: float, server_s: float | None, wall_s: float) -> dict[str, float | int | None]:
    cores = os.cpu_count() or 1
    total = tree_s + (server_s or 0.0)
    floor = total / cores
    return {
        "tree_cpu_s": round(tree_s, 2),
        "server_cpu_s": None if server_s is None else round(server_s, 2),
        "cpu_s": round(total, 2),
        "cores": cores,
        "floor_s": round(floor, 2),
        "process_wall_s": round(wall_s, 2),
        "wall_over_floor": round(wall_s / floor, 3) if floor else None,
    }
