"""How much ``maintenance_work_mem`` an HNSW build needs, so a build after a bulk load keeps its graph
in memory.

pgvector builds the graph in ``maintenance_work_mem``; once it no longer fits ("hnsw graph no longer
fits into maintenance_work_mem") the build goes on inserting on disk pages, many times slower. The
product's fixed 1 GB held 300k × 384 vectors at m 24 but not a million (docs/benchmarks.md). Measured
on this machine (`chronos bench search`): 1M × 384 at m 16 peaked at 3.2 GB in the building backend,
~2.1× the raw float4 vectors; each level-0 neighbour adds 2·m entries per element. The estimate below
is deliberately above both: the setting is a limit, not an allocation.
"""

from __future__ import annotations

import os

FLOOR_MB = 1024  # the old fixed value: never ask for less


def graph_mb(vectors: int, dimensions: int, m: int) -> int:
    """Estimated in-memory HNSW graph of ``vectors`` elements: 2.5x the raw vectors plus 2·m
    neighbour entries (24 bytes each) per element."""
    per_element = dimensions * 4 * 2.5 + 2 * m * 24
    return int(vectors * per_element / 2**20) + 1


def machine_ram_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return 4096


def build_memory_mb(vectors: int, dimensions: int, m: int, cap_mb: int | None) -> tuple[int, int]:
    """(what to set, what the graph needs): the graph's size, at least 1 GB, at most ``cap_mb``
    (None: half of this machine's RAM)."""
    need = graph_mb(vectors, dimensions, m)
    cap = cap_mb if cap_mb is not None else machine_ram_mb() // 2
    return max(FLOOR_MB, min(need, cap)), need
