"""``chronos bench convert`` as a user runs it: the real CLI in a subprocess, on a small folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS

pytestmark = pytest.mark.local_models
ROOT = Path(__file__).resolve().parent.parent


def test_bench_convert_json(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    for rel in ("pdf/multi_page.pdf", "pdf/password_protected_2206.01062_pg3.pdf", "docx/lorem_ipsum.docx",
                "csv/csv-comma.csv"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / rel, folder / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["CHRONOS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "convert", "--folder", str(folder), "--json",
         "--backends", "local,modal"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["documents"] == 4
    local = result["backends"]["local"]
    assert local["available"] and local["converted"] == 3 and local["failed"] == 1
    assert local["pages"] == 5 and local["by_type"]["pdf"]["pages"] == 5
    assert local["pages_per_s"] > 0 and local["s_per_doc"] > 0 and local["usd_per_doc"] > 0
    assert local["failures"][0]["error_class"] == "PasswordProtected"
    modal = result["backends"]["modal"]
    assert modal == {"available": False, "reason": modal["reason"]} and "MODAL_TOKEN_ID" in modal["reason"]
