"""Scoring for ``chronos bench retrieval``: recall@k and MRR per question kind.

A hit is relevant to a question when it comes from the question's document, its text contains the
answer (case-insensitive, whitespace-normalised) and, when the question names a page, its pages
include it (a system that reports no pages cannot get a page-checked question right on pages; its
``page_unknown`` count says how often that was the only reason). recall@k: the share of questions
with a relevant hit among the first k. MRR: the mean of 1/rank of the first relevant hit (0 when none
is within the hits returned).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.bench.retrieval_corpus import Question

KS = (1, 5, 10)


@dataclass(frozen=True)
class RankedHit:
    filename: str
    text: str
    pages: tuple[int, ...] = ()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def first_relevant(question: Question, hits: Sequence[RankedHit], *, require_page: bool = True) -> int | None:
    """1-based rank of the first relevant hit, or None."""
    answer = _norm(question.answer)
    for rank, hit in enumerate(hits, 1):
        if hit.filename != question.filename or answer not in _norm(hit.text):
            continue
        if require_page and question.page is not None and question.page not in hit.pages:
            continue
        return rank
    return None


def score(questions: Sequence[Question], results: Sequence[Sequence[RankedHit]],
          ks: Sequence[int] = KS) -> dict[str, Any]:  # fmt: skip
    """{"overall": {...}, "by_kind": {kind: {...}}} with n, recall@k for each k, mrr, page_unknown."""
    if len(questions) != len(results):
        raise ValueError(f"{len(questions)} questions but {len(results)} result lists")
    groups: dict[str, list[tuple[int | None, bool]]] = {}
    for q, hits in zip(questions, results, strict=True):
        rank = first_relevant(q, hits)
        page_unknown = rank is None and q.page is not None and first_relevant(q, hits, require_page=False) is not None
        groups.setdefault(q.kind, []).append((rank, page_unknown))
        groups.setdefault("overall", []).append((rank, page_unknown))

    def summary(ranks: list[tuple[int | None, bool]]) -> dict[str, Any]:
        n = len(ranks)
        out: dict[str, Any] = {"n": n}
        for k in ks:
            out[f"recall@{k}"] = round(sum(1 for r, _ in ranks if r is not None and r <= k) / n, 4) if n else 0.0
        out["mrr"] = round(sum(1 / r for r, _ in ranks if r is not None) / n, 4) if n else 0.0
        out["page_unknown"] = sum(1 for _, p in ranks if p)
        return out

    overall = summary(groups.pop("overall", []))
    return {"overall": overall, "by_kind": {kind: summary(r) for kind, r in sorted(groups.items())}}


def misses(questions: Sequence[Question], results: Sequence[Sequence[RankedHit]], k: int = 5) -> list[dict[str, Any]]:
    """The questions without a relevant hit in the first ``k``, with what came first instead."""
    out = []
    for q, hits in zip(questions, results, strict=True):
        rank = first_relevant(q, hits)
        if rank is None or rank > k:
            top = hits[0] if hits else None
            out.append({"kind": q.kind, "question": q.question, "expected": q.filename, "answer": q.answer,
                        "rank": rank, "first_hit": top.filename if top else None})  # fmt: skip
    return out
