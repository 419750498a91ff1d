"""``chronos bench compare`` as a user runs it: the real CLI in a subprocess, on four corpus documents,
both sides against the tests' PostgreSQL server (each side in a database of its own)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS

pytestmark = pytest.mark.local_models
ROOT = Path(__file__).resolve().parent.parent
DOCS = ("pdf/multi_page.pdf", "docx/lorem_ipsum.docx", "html/example_01.html", "csv/csv-comma.csv")

BENCH_MODULES = (
    "llama_index.readers.docling",
    "llama_index.vector_stores.postgres",
    "llama_index.embeddings.huggingface",
)
for module in BENCH_MODULES:
    pytest.importorskip(module, reason="the `bench` extra is not installed (pip install -e '.[bench]')")
for module in ("app.chunking", "app.embedders"):
    pytest.importorskip(module, reason="the Chronos chunk/embed stages are not in this checkout yet")


def _number(value: object) -> float:
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    assert math.isfinite(value), value
    return float(value)


def test_compare_both_sides_make_chunks_and_vectors_for_every_document(tmp_path: Path, pg_admin_dsn: str) -> None:
    folder = tmp_path / "docs"
    for rel in DOCS:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / rel, folder / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "OPENAI_"))}
    env.update({"DATABASE_URL": pg_admin_dsn, "CHRONOS_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "compare", "--folder", str(folder), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    names = {Path(rel).name for rel in DOCS}
    assert result["files"] == len(DOCS)

    chronos, llama = result["chronos"], result["llamaindex"]
    for side in (chronos, llama):
        assert side["documents"] == len(DOCS)
        assert side["searchable"] == len(DOCS) and side["failed"] == 0, side["failures"]
        assert side["chunks"] >= len(DOCS)
        seconds = _number(side["seconds"])
        assert 0 < seconds < 300
        assert _number(side["documents_per_min"]) == pytest.approx(len(DOCS) / seconds * 60, rel=0.01)
        assert _number(side["chunks_per_s"]) == pytest.approx(side["chunks"] / seconds, rel=0.01)
        memory = side["memory"]
        # A Python process with Docling and a sentence-transformers model loaded is well above 100 MB.
        assert 100 < _number(memory["peak_rss_mb"]) < 20_000
        assert memory["samples"] > 1

    # Chronos: every document has chunks and vectors (projection tables when built, else the log),
    # and the log holds the whole story including the cost ledger.
    assert set(chronos["per_document"]) == names
    for name, doc in chronos["per_document"].items():
        chunks = doc.get("chunks", doc["log_chunks"])
        vectors = doc.get("vectors", doc["log_vectors"])
        assert chunks > 0 and vectors == chunks, (name, doc)
        assert doc["cost_events"] >= 1, (name, doc)
    assert chronos["events"] >= 4 * len(DOCS)
    # Chronos converts in child processes: the sampled tree has more than one process.
    assert chronos["memory"]["peak_processes"] >= 2

    # LlamaIndex: every document's nodes are in the PGVectorStore table, each with its embedding.
    assert set(llama["chunks_per_document"]) == names
    assert all(n > 0 for n in llama["chunks_per_document"].values())
    assert llama["stored"]["nodes"] == llama["stored"]["vectors"] == llama["chunks"]

    ratio = result["ratio"]
    assert _number(ratio["documents_per_min"]) == pytest.approx(
        chronos["documents_per_min"] / llama["documents_per_min"], rel=0.01
    )
    assert _number(ratio["chunks_per_s"]) > 0
