"""The text side of ``search_chunks_hybrid`` reads its candidates by MaxScore (the rarest words' chunks
first, one more word per pass, stopping when no unread chunk can reach the top n) and counts the rarer
words in its first pass. Its ranking must still be exactly the exhaustive one: here a brute-force
ranking of every chunk holding a word that is not common (the same idf, the same ts_rank) is the
reference, on a corpus large enough for ANALYZE's statistics to name the common words and for the
questions to need several passes, with and without a document filter."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import pytest

from app.bench.search_hybrid import PER_DOCUMENT, document_of, load_rows
from events.connection import create_pool

pytestmark = pytest.mark.integration
MODEL = "local:bench"
CHUNKS = 3000


async def reference(conn: Any, question: str, k: int, allowed: list[uuid.UUID] | None) -> list[tuple[uuid.UUID, float]]:
    """The exhaustive text ranking: every serving chunk (of the allowed documents) holding a word that
    at most 5 % of the chunks hold, scored by the idf sum of the question's words it holds plus
    ts_rank; document frequencies from ANALYZE's most common lexemes when listed there, else counted."""
    total = CHUNKS
    common = max(int(0.05 * total), 50)
    stats = await conn.fetchrow(
        "SELECT most_common_elems::text::text[] AS mce, most_common_elem_freqs AS mcf FROM pg_stats "
        "WHERE tablename = 'chunk_rows' AND attname = 'tsv'"
    )
    freq = dict(zip(stats["mce"], stats["mcf"], strict=False))
    lexemes = "SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', $1)) WHERE strpos(lexeme, '\\') = 0"
    words = [r[0] for r in await conn.fetch(lexemes, question)]
    dfs = []
    for w in words:
        if w in freq:
            dfs.append(math.ceil(freq[w] * total))
        else:
            dfs.append(await conn.fetchval(
                "SELECT count(*) FROM chunk_rows WHERE serving AND tsv @@ quote_literal($1)::tsquery", w))  # fmt: skip
    idf = [math.log(1 + (total - d + 0.5) / (d + 0.5)) for d in dfs]
    gen = [w for w, d in zip(words, dfs, strict=True) if d <= common]
    assert gen, question
    rows = await conn.fetch(
        "SELECT c.chunk_id, ARRAY(SELECT c.tsv @@ quote_literal(w)::tsquery FROM unnest($2::text[]) w) AS held, "
        "ts_rank(c.tsv, chronos_or_tsquery($4)) AS rank FROM chunk_rows c "
        "WHERE c.serving AND c.tsv @@ $1::tsquery AND ($3::uuid[] IS NULL OR c.document_id = ANY ($3))",
        " | ".join(f"'{w}'" for w in gen), words, allowed, question,
    )  # fmt: skip
    scored = [(r["chunk_id"], sum(i for i, h in zip(idf, r["held"], strict=True) if h) + r["rank"]) for r in rows]
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored[:k]


def same_ranking(got: list[tuple[uuid.UUID, float]], want: list[tuple[uuid.UUID, float]]) -> None:
    """Equal scores position by position; the same chunks except among ties at the cut (float sums)."""
    assert len(got) == len(want)
    assert [round(s, 6) for _, s in got] == [round(s, 6) for _, s in want], (got, want)
    if not want:
        return
    cut = want[-1][1]
    assert {c for c, s in want if s > cut + 1e-6} <= {c for c, _ in got}


async def test_text_side_is_the_exhaustive_ranking(dsn: str) -> None:
    rng = random.Random(11)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(CHUNKS)]
            texts = await load_rows(conn, ids, MODEL, 384)
            assert await conn.fetchval(
                "SELECT most_common_elem_freqs[cardinality(most_common_elems::text::text[]) + 1] * $1 <= $1 * 0.05 "
                "FROM pg_stats WHERE tablename = 'chunk_rows' AND attname = 'tsv'", CHUNKS)  # fmt: skip
            docs = list(dict.fromkeys(document_of(ids)))
            allowed = rng.sample(docs, len(docs) // 3)
            questions = [" ".join(texts[rng.randrange(CHUNKS)].split()[:8]) for _ in range(25)]
            questions += [f"{t.split()[0]} reference CHRONOS-{n}" for n, t in zip((7, 1500, 2999), texts, strict=False)]
            checked = full = 0
            for n, question in enumerate(questions):
                for k, filt in ((10, None), (40, None), (10, allowed)):
                    want = await reference(conn, question, k, filt)
                    rows = await conn.fetch(
                        "SELECT chunk_id, score, document_id FROM search_chunks_hybrid($1, NULL, $2, $3, 'text', NULL, "
                        "$4::uuid[])", question, k, MODEL, filt)  # fmt: skip
                    got = [(r["chunk_id"], r["score"]) for r in rows]
                    same_ranking(got, want)
                    full += len(got) == k
                    if filt is not None:
                        assert {r["document_id"] for r in rows} <= set(filt)
                    checked += 1
                    if n >= len(questions) - 3 and filt is None:  # a code finds its own chunk first
                        assert got[0][0] == ids[int(question.rsplit("-", 1)[1])], question
            assert checked == len(questions) * 3 and full >= checked * 0.8, (checked, full)
            assert len(docs) == CHUNKS // PER_DOCUMENT
    finally:
        await pool.close()


async def test_every_word_common_still_ranks(dsn: str) -> None:
    """A question of only common words reads a bounded number of their chunks and ranks them."""
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            ids = [uuid.uuid4() for _ in range(CHUNKS)]
            await load_rows(conn, ids, MODEL, 384)
            stats = await conn.fetchrow(
                "SELECT most_common_elems::text::text[] AS mce, most_common_elem_freqs AS mcf FROM pg_stats "
                "WHERE tablename = 'chunk_rows' AND attname = 'tsv'"
            )
            assert stats is not None
            by_freq = sorted(zip(stats["mce"], stats["mcf"], strict=False), key=lambda t: -t[1])[:3]
            assert all(f > 0.05 for _, f in by_freq), by_freq  # every word common
            common_words = " ".join(w for w, _ in by_freq)
            rows = await conn.fetch("SELECT chunk_id, score FROM search_chunks_hybrid($1, NULL, 10, $2, 'text')",
                                    common_words, MODEL)  # fmt: skip
            assert len(rows) == 10
            scores = [r["score"] for r in rows]
            assert scores == sorted(scores, reverse=True) and scores[0] > 0
    finally:
        await pool.close()
