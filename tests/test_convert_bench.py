"""``chronos bench convert`` as a user runs it: the real CLI in a subprocess, on a small folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CORPUS
from tests.modal_standin import deploy

__all__ = ["deploy"]  # the fixture

pytestmark = pytest.mark.local_models
ROOT = Path(__file__).resolve().parent.parent


def test_bench_convert_json(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    for rel in (
        "pdf/multi_page.pdf",
        "pdf/password_protected_2206.01062_pg3.pdf",
        "docx/lorem_ipsum.docx",
        "csv/csv-comma.csv",
    ):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / rel, folder / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["CHRONOS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "bench",
            "convert",
            "--folder",
            str(folder),
            "--json",
            "--backends",
            "local,modal",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["documents"] == 4
    local = result["backends"]["local"]
    assert local["available"] and local["converted"] == 3 and local["failed"] == 1
    assert local["pages"] == 5 and local["by_type"]["pdf"]["pages"] == 5
    assert local["pages_per_s"] > 0 and local["s_per_doc"] > 0 and local["usd_per_doc"] > 0
    assert local["usd_per_page"] > 0 and local["docs_per_process_start"] > 0
    assert local["failures"][0]["error_class"] == "PasswordProtected"
    modal = result["backends"]["modal"]
    assert modal == {"available": False, "reason": modal["reason"]} and "MODAL_TOKEN_ID" in modal["reason"]


async def test_bench_convert_modal_through_the_service_path(deploy: Any, tmp_path: Path) -> None:
    """The Modal row against a stand-in deployment running the real body: dollars from the ledger's
    own cost lines (cold start and idle window included), documents per container start."""
    from app import costs
    from app.bench.convert import run_bench
    from app.convert import ConvertOptions

    folder = tmp_path / "docs"
    folder.mkdir()
    for rel in ("pdf/multi_page.pdf", "pdf/normal_4pages.pdf", "docx/lorem_ipsum.docx"):
        shutil.copy(CORPUS / rel, folder / Path(rel).name)
    fake = deploy()
    result = await run_bench(folder, ["modal"], ConvertOptions(), quiet=True)
    modal = result["backends"]["modal"]
    assert modal["available"] and modal["converted"] == 2 and modal["pages"] == 9
    assert modal["converted_locally_not_gpu"] == 1 and fake.documents_sent == [2]
    assert modal["calls"] == 1 and modal["container_starts"] == 1 and modal["docs_per_container_start"] == 2
    rate = costs.modal_rate_per_second("A10G", 4.0, 12.0)
    assert modal["idle_usd"] == pytest.approx(60 * rate, rel=1e-3)  # one idle window for the one start
    assert modal["cold_start_usd"] > 0
    usd = modal["container_s"] * rate
    assert modal["usd_per_page"] == pytest.approx(usd / 9, rel=1e-3)
    assert modal["pages_per_s"] > 0 and modal["s_per_doc"] > 0
