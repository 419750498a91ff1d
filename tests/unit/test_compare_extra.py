"""bench compare says which extra to install instead of crashing in the baseline's subprocess."""

from __future__ import annotations

import argparse

import pytest

from app.bench import compare


def test_missing_baseline_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_huggingface(name: str, *args: object) -> object:
        if name == "llama_index.embeddings.huggingface":
            return None
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_huggingface)
    assert "llama_index.embeddings.huggingface" in compare.missing_baseline_modules()


async def test_compare_stops_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(compare, "missing_baseline_modules", lambda: ["llama_index.embeddings.huggingface"])
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    compare.register(sub)
    args = parser.parse_args(["compare", "--rounds", "1"])
    assert await compare.main(args) == 2
    err = capsys.readouterr().err
    assert "make install-bench" in err and "llama_index.embeddings.huggingface" in err
