"""The local embedder (real bundled all-MiniLM-L6-v2) and the embedding cache on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import numpy as np
import pytest

from app.embedders import EmbedResult, embed_with_cache, get_embedder, text_sha256

pytestmark = pytest.mark.local_models


async def test_local_model_vectors_are_normalized_and_semantic() -> None:
    emb = get_embedder(None, __import__("app.config").config.Settings())
    assert emb.model == "local:all-MiniLM-L6-v2" and emb.dimensions == 384 and emb.max_tokens == 256
    texts = ["A cat is sleeping on the sofa.", "A kitten naps on the couch.", "Quarterly tax filings are due."]
    result = await emb.embed(texts)
    v = result.vectors
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    (line,) = result.cost
    assert line.provider == "local" and line.resource == "cpu_seconds" and line.quantity == result.cpu_s > 0
    assert emb.count_tokens(["hello world"]) == [4]  # [CLS] hello world [SEP]


class Counting:
    """Wraps the real embedder and records what reached it."""

    def __init__(self) -> None:
        self.inner = get_embedder("local")
        self.model, self.provider = self.inner.model, self.inner.provider
        self.dimensions, self.max_tokens = self.inner.dimensions, self.inner.max_tokens
        self.seen: list[str] = []

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def tokenizer_name(self) -> str:
        return self.inner.tokenizer_name()

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        self.seen.extend(texts)
        return await self.inner.embed(texts)


async def test_cache_reuses_rows_and_embeds_only_misses(pool: asyncpg.Pool) -> None:
    emb = Counting()
    cached = np.full(384, 0.5, dtype=np.float32)
    other_model = np.full(384, 0.25, dtype=np.float32)
    await pool.execute(
        "INSERT INTO embedding_cache (model, dimensions, text_sha256, document_id, embedding) VALUES"
        " ($1, 384, $2, gen_random_uuid(), $3), ($1, 384, $2, gen_random_uuid(), $3),"
        " ('openai:text-embedding-3-small@384', 384, $4, gen_random_uuid(), $5)",
        emb.model,
        text_sha256("old text"),
        cached,
        text_sha256("new text"),
        other_model,
    )
    result = await embed_with_cache(pool, emb, ["old text", "new text", "old text", "new text"])
    assert emb.seen == ["new text"]  # one miss, embedded once; the other model's row is not used
    assert result.reused_count == 2 and result.embedded_count == 1
    assert np.allclose(result.vectors[0], cached) and np.allclose(result.vectors[2], cached)
    assert np.allclose(result.vectors[1], result.vectors[3]) and not np.allclose(result.vectors[1], other_model)
    assert result.tokens == 4 and result.cost and result.cost[0].resource == "cpu_seconds"
    emb.seen.clear()
    all_cached = await embed_with_cache(pool, emb, ["old text"])
    assert emb.seen == [] and all_cached.reused_count == 1 and all_cached.cost == [] and all_cached.tokens == 0


def test_batcher_shares_length_sorted_batches_among_callers() -> None:
    """Texts of concurrent callers are batched together, longest first, each vector back in its
    caller's place; CPU time is shared out (never more than was spent); a failing batch fails its
    callers and the batcher keeps serving."""
    import threading

    from app.embedders.batcher import Batcher

    seen: list[list[int]] = []
    gate = threading.Event()

    def forward(texts: list[str]) -> np.ndarray:
        gate.wait(5)  # let every caller queue up before the first batch runs
        if any(t == "boom" for t in texts):
            raise ValueError("bad batch")
        seen.append([len(t) for t in texts])
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)

    batcher = Batcher(forward, dimensions=2, threads=2, batch_size=4, min_batch=2)
    callers = [["a" * n for n in (3, 30, 7)], ["b" * n for n in (12, 1)], ["c" * n for n in (25, 4, 9, 16)]]
    results: dict[int, tuple[np.ndarray, float]] = {}

    def call(i: int) -> None:
        results[i] = batcher.run(callers[i], [len(t) for t in callers[i]])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    for i, texts in enumerate(callers):
        vectors, cpu_s = results[i]
        assert vectors.tolist() == [[len(t), ord(t[0])] for t in texts]  # in the caller's order
        assert cpu_s >= 0
    assert sorted(n for batch in seen for n in batch) == sorted(len(t) for c in callers for t in c)
    assert all(batch == sorted(batch, reverse=True) for batch in seen)  # longest first within a batch
    assert all(len(batch) <= 4 for batch in seen) and batcher.batches == len(seen) < 9
    with pytest.raises(ValueError, match="bad batch"):
        batcher.run(["boom"], [4])
    vectors, _ = batcher.run(["ok"], [2])
    assert vectors.tolist() == [[2, ord("o")]]
    assert batcher.run([], [])[0].shape == (0, 2)


def test_embed_threads_setting() -> None:
    from app import config
    from app.config import ConfigError, Settings
    from app.embedders.local import embed_threads

    previous = config.use(Settings.from_env({"CHRONOS_EMBED_THREADS": "3"}))
    try:
        assert embed_threads() == 3
        for bad in ("0", "two"):
            with pytest.raises(ConfigError, match="CHRONOS_EMBED_THREADS"):
                Settings.from_env({"CHRONOS_EMBED_THREADS": bad})
        config.use(Settings.from_env({}))
        assert embed_threads() >= 1
    finally:
        config.use(previous)  # back to the environment as it is (None), not a snapshot of it


async def test_parallel_batches_equal_sentence_transformers_encode() -> None:
    """Length-sorted batches on several threads, from several jobs at once, give the vectors the
    model's own ``encode`` gives, each in its text's place."""
    import asyncio

    from sentence_transformers import SentenceTransformer

    from app.embedders.local import LocalEmbedder, bundled_model_dir

    emb = LocalEmbedder(batch_size=4, threads=3)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "tax", "filings"]
    texts = [" ".join(words[: 1 + (i * 7) % len(words)]) + f" item {i}" for i in range(40)]
    texts.append("word " * 400)  # longer than the window: truncated like encode truncates it
    reference = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
    reference.max_seq_length = emb.max_tokens
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    results = await asyncio.gather(*(emb.embed(texts[i::3]) for i in range(3)))  # three jobs at once
    for i, result in enumerate(results):
        assert result.vectors.shape == (len(texts[i::3]), 384)
        assert np.allclose(result.vectors, expected[i::3], atol=1e-5)
        assert result.cpu_s > 0


def test_the_loaded_model_does_not_import_sentence_transformers_scikit_learn_or_scipy() -> None:
    """The pipeline runs on transformers alone: sentence-transformers would bring scikit-learn, SciPy and
    pandas into every worker (about 100 MB of its memory, issue 16.1), and transformers' own loss modules
    import SciPy whenever it is installed (36 MB). Afterwards transformers sees SciPy again."""
    import subprocess
    import sys

    probe = (
        "import sys; from app.embedders.local import LocalEmbedder; e = LocalEmbedder(); e.warm_up(); "
        "import transformers.utils as u, transformers.utils.import_utils as iu; "
        "print(sorted(m for m in ('sentence_transformers', 'sklearn', 'pandas', 'scipy') if m in sys.modules), "
        "u.is_scipy_available(), iu.is_scipy_available())"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[] True True", done.stdout + done.stderr
