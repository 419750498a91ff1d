"""``chronos bench search --json`` runs end to end on a small set and prints what it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_search_json(pg_admin_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": pg_admin_dsn, "CHRONOS_HOME": str(tmp_path / "home")}
    argv = ["bench", "search", "--vectors", "2000", "--queries", "8", "--ef-search", "40", "--json"]
    done = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    build = out["index_build"]  # was a Decimal that --json could not print
    assert build["hnsw_index_mb"] > 0 and build["vectors_table_total_mb"] >= build["hnsw_index_mb"]
    assert build["maintenance_work_mem_mb"] >= 1024
    [run] = out["runs"]
    assert run["uses_hnsw"] and 0 < run["recall_at_10"] <= 1 and run["p50_ms"] > 0
    assert out["hybrid"]["hybrid"]["p50_ms"] > 0 and 0 < out["hybrid"]["vector"]["recall_at_10"] <= 1
