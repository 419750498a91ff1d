"""A new user's first run (issue 11 item 6): without ``../shared/corpus`` ``make run`` ingests the
sample set ``chronos sample`` writes, and the README's question is answered; ``chronos documents``
lists the ids that ``delete`` and ``reprocess`` need. The real CLI in subprocesses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncpg
import pytest

from app.convert.sniff import SUPPORTED_MEDIA_TYPES, sniff_path
from app.runtime import Runtime
from app.samples import write_samples
from events.store import EventStore
from tests.cli_support import ROOT, Cli, cli_env
from tests.test_api_documents import MD
from tests.test_pipeline import put_bytes, rt

__all__ = ["rt"]  # the fixture

QUESTION = "In which year was IBM founded?"


def test_the_sample_set_has_one_document_of_each_kind(tmp_path: Path) -> None:
    files = write_samples(tmp_path / "samples")
    kinds = {f.name: sniff_path(f) for f in files}
    assert all(kind in SUPPORTED_MEDIA_TYPES for kind in kinds.values()), kinds
    assert len(set(kinds.values())) == len(files) == 6, kinds  # PDF, DOCX, HTML, Markdown, CSV, text
    assert sum(f.stat().st_size for f in files) < 20_000  # small: generated, nothing kept in git


def test_make_run_uses_the_samples_without_the_shared_corpus() -> None:
    """``make -n`` shows what ``make run`` would do, with the shared corpus present and absent."""

    def plan(*extra: str) -> str:
        done = subprocess.run(["make", "-n", "run", "STAMP=Makefile", *extra], cwd=ROOT, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout

    absent = plan("SHARED_CORPUS=/nonexistent/corpus")
    assert "chronos sample samples" in absent and "chronos ingest samples --wait" in absent
    present = plan(f"SHARED_CORPUS={ROOT}")  # any folder that exists stands in for the shared corpus
    assert f"chronos ingest {ROOT} --wait" in present and "chronos sample" not in present
    assert f'chronos search "{QUESTION}"' in absent and f'chronos search "{QUESTION}"' in present
    torch = subprocess.run(["make", "-n", "install", "VENV=/nonexistent/venv", "TORCH_INDEX_URL=https://example.invalid/cpu"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "pip install --index-url https://example.invalid/cpu 'torch==2.13.0'" in torch


@pytest.mark.local_models
async def test_the_sample_set_answers_the_readme_question(dsn: str, tmp_path: Path) -> None:
    cli = Cli(cli_env(DATABASE_URL=dsn))
    folder = tmp_path / "samples"
    await cli("sample", str(folder))
    await cli("ingest", str(folder), "--wait", timeout=600)
    listed = await cli.json("documents", "list")
    assert isinstance(listed, list) and len(listed) == 6
    assert {d["status"] for d in listed} == {"searchable"}, [(d["filename"], d["last_error"]) for d in listed]
    hits = await cli.json("search", QUESTION, "-k", "3")
    assert isinstance(hits, list) and hits
    assert "1911" in hits[0]["text"] and hits[0]["filename"] in ("computing-history.html", "milestones.csv")


async def test_documents_list_and_show(dsn: str, pool: asyncpg.Pool, store: EventStore, rt: Runtime) -> None:
    from tests.api_support import fake_failure

    good = await put_bytes(rt, MD, "notes.md")
    bad = await put_bytes(rt, MD + b"\nother\n", "broken.md")
    await fake_failure(rt, bad.document_id, message="the converter choked")
    cli = Cli(cli_env(DATABASE_URL=dsn))
    rows = await cli.json("documents", "list")  # the projection is brought up to date first
    assert isinstance(rows, list)
    by_id = {r["document_id"]: r for r in rows}
    assert set(by_id) == {good.document_id, bad.document_id}
    assert by_id[good.document_id]["status"] == "uploaded" and by_id[good.document_id]["filename"] == "notes.md"
    assert by_id[bad.document_id]["status"] == "failed" and by_id[bad.document_id]["error_class"] == "BrokenInput"
    failed = await cli.json("documents", "list", "--status", "failed")
    assert isinstance(failed, list) and [r["document_id"] for r in failed] == [bad.document_id]
    human = (await cli("documents", "list")).out
    assert good.document_id in human and bad.document_id in human and "BrokenInput: the converter choked" in human
    assert "2 document(s): 1 failed, 1 uploaded" in human
    shown = await cli.json("documents", "show", bad.document_id)
    assert isinstance(shown, dict) and shown["document_id"] == bad.document_id and shown["status"] == "failed"
    assert [s["stage"] for s in shown["stages"]] == ["convert", "chunk", "embed"]
    text = (await cli("documents", "show", good.document_id)).out
    assert "notes.md" in text and good.document_id in text and "convert" in text
    wrong = await cli("documents", "list", "--status", "finished", ok=False)
    assert wrong.code == 2 and "unknown status 'finished'" in wrong.err and "Traceback" not in wrong.err
    missing = await cli("documents", "show", "not-an-id", ok=False)
    assert missing.code == 3 and "is not a document id" in missing.err
