"""The retrieval benchmark's corpus asks questions with one right answer: each needle's depot is named
in one manual only (with three long PDFs, two manuals held "Capreol" and the question had two answers)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from app.bench import retrieval
from app.bench.retrieval_corpus import DEPOTS, MAX_MANUALS, depots_of, generate

pytestmark = pytest.mark.unit


def test_no_depot_is_in_two_manuals() -> None:
    named = [d for n in range(MAX_MANUALS) for d in depots_of(n)]
    assert len(named) == len(set(named)) == MAX_MANUALS * 3 <= len(DEPOTS)
    assert MAX_MANUALS >= 4
    with pytest.raises(ValueError, match="at most"):
        depots_of(MAX_MANUALS)


def test_more_manuals_than_depots_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="at most"):
        generate(tmp_path, long_pdfs=MAX_MANUALS + 1)
    args = argparse.Namespace(cities=1, long_pdfs=MAX_MANUALS + 1, pages=40, no_llamaindex=True, json=True)
    assert asyncio.run(retrieval.main(args)) == 2
    assert "--long-pdfs is at most" in capsys.readouterr().err
