"""The scoring of ``chronos bench retrieval`` on a tiny hand-made set (no database, not timed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench.retrieval_corpus import CITIES, generate
from app.bench.retrieval_score import RankedHit, first_relevant, misses, score


def Q(kind: str, filename: str, answer: str, page: int | None = None):  # type: ignore[no-untyped-def]
    from app.bench.retrieval_corpus import Question

    return Question(kind, f"q about {answer}", filename, answer, page)


def test_recall_and_mrr_by_kind() -> None:
    questions = [Q("table", "a.md", "455"), Q("table", "b.md", "8.8 percent"), Q("needle", "m.pdf", "CHRONOS-1", 27)]
    results = [
        [RankedHit("a.md", "| Housing starts | 455 |")],  # rank 1
        [RankedHit("a.md", "rose 8.8 percent"), RankedHit("c.md", "x"), RankedHit("b.md", "rose 8.8\n PERCENT")],
        [RankedHit("m.pdf", "code CHRONOS-1", (26,)), RankedHit("m.pdf", "code CHRONOS-1", (27,))],  # rank 2
    ]
    s = score(questions, results, ks=(1, 2, 5))
    assert s["overall"] == {"n": 3, "recall@1": 0.3333, "recall@2": 0.6667, "recall@5": 1.0,
                            "mrr": round((1 + 1 / 3 + 1 / 2) / 3, 4), "page_unknown": 0}  # fmt: skip
    assert s["by_kind"]["table"]["recall@1"] == 0.5 and s["by_kind"]["table"]["mrr"] == round((1 + 1 / 3) / 2, 4)
    assert s["by_kind"]["needle"]["recall@1"] == 0.0 and s["by_kind"]["needle"]["mrr"] == 0.5


def test_wrong_document_wrong_page_and_no_pages() -> None:
    q = Q("needle", "m.pdf", "CHRONOS-1", 27)
    assert first_relevant(q, [RankedHit("other.pdf", "CHRONOS-1", (27,))]) is None
    assert first_relevant(q, [RankedHit("m.pdf", "CHRONOS-1", (3,))]) is None
    no_pages = [[RankedHit("m.pdf", "CHRONOS-1")]]
    s = score([q], no_pages)
    assert s["overall"]["recall@10"] == 0.0 and s["overall"]["page_unknown"] == 1
    assert misses([q], no_pages)[0]["rank"] is None
    with pytest.raises(ValueError, match="1 questions but 0"):
        score([q], [])


def test_generated_corpus_plants_every_answer_in_its_document(tmp_path: Path) -> None:
    corpus = generate(tmp_path, cities=2, long_pdfs=0, formats=("md",))
    kinds = {q.kind for q in corpus.questions}
    assert {"title_only", "title_only_opaque_name", "distractor", "table", "exact"} <= kinds
    names = {p.name for p in corpus.files}
    for q in corpus.questions:
        assert q.filename in names
        if q.filename.endswith(".md"):
            text = (tmp_path / q.filename).read_text(encoding="utf-8")
            assert q.answer in text, q
            if q.kind.startswith("title_only"):  # the answer's paragraph never names the city; the title does
                city = next(c for c in CITIES if c in q.question)
                para = next(p for p in text.split("\n\n") if q.answer in p)
                assert city not in para and city in text.split("\n")[0]
            if q.kind == "title_only_opaque_name":  # ... and the file name does not either
                assert not any(c.lower().replace(" ", "-") in q.filename for c in CITIES), q.filename
    assert generate(tmp_path / "again", cities=2, long_pdfs=0, formats=("md",)).questions == corpus.questions
