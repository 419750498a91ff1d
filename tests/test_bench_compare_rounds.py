"""How ``chronos bench compare --rounds N`` combines its rounds (no models needed)."""

from __future__ import annotations

from typing import Any

from app.bench.compare import combine, figures


def _round(chronos_s: float, llama_s: float) -> dict[str, Any]:
    memory: dict[str, object] = {"peak_rss_mb": 1000.0, "peak_pss_mb": 800.0}
    sides = {
        name: figures({"seconds": s, "searchable": 9, "failed": 1, "chunks": 50, "failures": []}, memory)
        for name, s in (("chronos", chronos_s), ("llamaindex", llama_s))
    }
    c, li = sides["chronos"], sides["llamaindex"]
    ratio = {
        "documents_per_min": round(c["documents_per_min"] / li["documents_per_min"], 3),
        "chunks_per_s": round(c["chunks_per_s"] / li["chunks_per_s"], 3),
        "peak_rss": 1.0,
        "peak_pss": 1.0,
    }
    return {"files": 10, **sides, "ratio": ratio}


def test_rounds_give_each_sides_median_and_the_median_paired_ratio() -> None:
    # The machine slows down in round 2 for both sides; the paired ratios stay near 1.2.
    rounds = [_round(30.0, 36.0), _round(45.0, 55.0), _round(31.0, 37.0)]
    result = combine(rounds)
    assert result["chronos"]["seconds"] == 31.0 and result["llamaindex"]["seconds"] == 37.0  # medians
    paired = sorted(r["ratio"]["documents_per_min"] for r in rounds)
    assert result["ratio"]["documents_per_min"] == paired[1]  # median of the per-round ratios
    assert [r["chronos"]["seconds"] for r in result["rounds"]] == [30.0, 45.0, 31.0]
    assert result["goal"] == {"minimum": 1.0, "aim": 1.5}


def test_one_round_is_reported_as_it_is() -> None:
    only = _round(30.0, 36.0)
    result = combine([only])
    assert result["chronos"] == only["chronos"] and result["ratio"] == only["ratio"]
    assert "rounds" not in result


def test_one_side_only_has_no_ratio() -> None:
    rounds = [{k: v for k, v in _round(30.0, 36.0).items() if k not in ("llamaindex", "ratio")} for _ in range(2)]
    result = combine(rounds)
    assert "ratio" not in result and "llamaindex" not in result and result["chronos"]["seconds"] == 30.0
