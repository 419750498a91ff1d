"""glibc's allocator, tuned for long-lived processes that allocate large short-lived buffers.

The worker embeds with torch and the converter processes run Docling: both allocate megabytes at a
time (activations, page text, JSON) and free them a moment later. glibc's defaults keep that memory:

* its mmap threshold is *dynamic*: once a large block served by mmap is freed, blocks up to that size
  come from the heap instead, where freed memory stays behind the live blocks above it;
* every thread that meets a locked arena gets an arena of its own (up to 8 per core), each holding
  its own free memory.

Measured on ``chronos bench compare --only chronos`` (92 files, quiet machine, ``docs/benchmarks.md``):
with the defaults the tree peaked at 1179-1198 MB PSS and 75-79 CPU-s; with fixed 4 MB mmap and trim
thresholds and two arenas at 1093-1116 MB and 62-66 CPU-s; at 128 kB at 1040 MB but 84-94 CPU-s
(every activation a fresh mmap: page faults and zeroing).
``tune()`` applies that with ``mallopt`` at run time (the same effect as the ``MALLOC_*_`` variables,
which glibc reads only at start); a variable the operator set wins. ``trim()`` hands free heap memory
back to the OS (``malloc_trim``): the converter calls it after each document, once the reply is sent.

Elsewhere than glibc (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import cache

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

THRESHOLD_BYTES = 4 * 1024 * 1024  # 128 kB gave 60 MB less but cost ~20 % more CPU (page faults)
ARENAS = 2

_SETTINGS = (
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, THRESHOLD_BYTES),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, THRESHOLD_BYTES),
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS),
)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def tune() -> dict[str, int]:
    """Fix the mmap and trim thresholds and cap the arenas, unless the environment already sets
    them; the settings applied, by variable name (empty where there is no glibc)."""
    if os.environ.get("CHRONOS_MALLOC_TUNING", "on").lower() in {"off", "0", "false", "no"}:
        return {}
    libc = _libc()
    if libc is None:
        return {}
    applied: dict[str, int] = {}
    for variable, parameter, value in _SETTINGS:
        if variable in os.environ:
            continue
        if libc.mallopt(parameter, value) == 1:
            applied[variable] = value
        else:
            log.warning("mallopt(%s, %s) failed; the allocator keeps its default", variable, value)
    return applied


def trim() -> bool:
    """Return free heap memory to the OS; False where there is no glibc or nothing was returned."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
