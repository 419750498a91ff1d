"""The CPU floor of ``bench compare`` (app/bench/cpu.py): a child's CPU is counted once it has ended,
and the floor is CPU-seconds over cores."""

from __future__ import annotations

import subprocess
import sys

from app.bench.cpu import children_cpu_s, floor_figures


def test_a_child_processs_cpu_is_counted_after_it_ends() -> None:
    before = children_cpu_s()
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)
    assert children_cpu_s() - before >= 0.3


def test_the_floor_is_cpu_over_cores() -> None:
    figures = floor_figures(6.0, 2.0, 10.0)
    assert figures["cpu_s"] == 8.0
    assert figures["floor_s"] == round(8.0 / int(figures["cores"] or 1), 2)
    assert figures["wall_over_floor"] == round(10.0 / float(figures["floor_s"] or 1), 3)
    assert floor_figures(4.0, None, 4.0)["server_cpu_s"] is None
