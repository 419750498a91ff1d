"""The local embedder's batcher shares a small request among its idle threads."""

from __future__ import annotations

import threading

import numpy as np

from app.embedders.batcher import Batcher


def test_a_small_request_runs_on_every_idle_thread_evenly() -> None:
    sizes: list[int] = []
    both = threading.Barrier(2, timeout=10)  # passes only if two batches run at the same time
    lock = threading.Lock()

    def forward(texts: list[str]) -> np.ndarray:
        with lock:
            sizes.append(len(texts))
        both.wait()
        return np.array([[len(t), 0.0] for t in texts], dtype=np.float32)

    batcher = Batcher(forward, dimensions=2, threads=2, batch_size=32)
    texts = ["a" * n for n in (190, 183, 189, 185, 93)]  # one 2-page document's chunks
    vectors, _ = batcher.run(texts, [len(t) for t in texts])
    assert vectors[:, 0].tolist() == [len(t) for t in texts]
    assert sorted(sizes) == [2, 3]  # not 4 + 1: the longest batch decides when the request is done


def test_a_busy_thread_leaves_the_request_to_the_idle_one() -> None:
    release = threading.Event()
    started = threading.Event()
    sizes: list[int] = []

    def forward(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        if texts[0] == "slow":
            started.set()
            release.wait(10)
        return np.zeros((len(texts), 2), dtype=np.float32)

    batcher = Batcher(forward, dimensions=2, threads=2, batch_size=32)
    slow = batcher.submit(["slow"], [1])
    assert started.wait(10)
    vectors, _ = batcher.run(["x"] * 6, [1] * 6)  # the other thread takes all six at once
    assert vectors.shape == (6, 2) and sizes[1:] == [6]
    release.set()
    slow.result(10)


def test_a_batch_holds_at_most_its_padded_token_budget() -> None:
    """Long texts go four to a batch under a 1024-token budget (a batch of 32 would keep the next
    urgent text waiting ~2.4 s for a thread); short ones still fill the batch size."""
    sizes: list[tuple[int, int]] = []

    def forward(texts: list[str]) -> np.ndarray:
        sizes.append((len(texts), max(len(t) for t in texts)))
        return np.zeros((len(texts), 2), dtype=np.float32)

    batcher = Batcher(forward, dimensions=2, threads=1, batch_size=32, max_batch_tokens=1024)
    long = ["a" * 256] * 10
    vectors, _ = batcher.run(long, [len(t) for t in long])
    assert vectors.shape == (10, 2)
    assert [n for n, _ in sizes] == [4, 4, 2]
    sizes.clear()
    short = ["b" * 20] * 40
    batcher.run(short, [len(t) for t in short])
    assert [n for n, _ in sizes] == [32, 8]
    sizes.clear()
    mixed = ["c" * 600, "d" * 300, "e" * 10, "f" * 10]  # one text over the budget still runs, alone
    batcher.run(mixed, [len(t) for t in mixed])
    assert sizes == [(1, 600), (3, 300)]
    assert all(n * longest <= 1024 or n == 1 for n, longest in sizes)
