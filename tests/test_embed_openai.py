"""The OpenAI embedder with the real openai client against a local stand-in server."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.costs import price
from app.embedders import EmbeddingAuthError, EmbeddingUnavailable
from app.embedders.openai import OpenAIEmbedder
from tests.openai_standin import openai_standin, vector_for


def _embedder(url: str, **kw: object) -> OpenAIEmbedder:
    return OpenAIEmbedder("text-embedding-3-small", api_key="test-key", base_url=url,
                          backoff_base_s=0.05, **kw)  # type: ignore[arg-type]


async def test_batches_respect_input_and_token_limits_and_usage_becomes_cost() -> None:
    texts = [f"sentence number {i} about ducks and geese" for i in range(25)]
    with openai_standin() as srv:
        emb = _embedder(srv.url, max_batch_inputs=10, max_batch_tokens=60)
        counts = emb.count_tokens(texts)
        result = await emb.embed(texts)
    sizes = [len(r["input"]) for r in srv.requests]
    assert sum(sizes) == 25 and len(sizes) > 3
    assert all(s <= 10 for s in sizes)
    start = 0
    for size in sizes:  # every request within the token limit, inputs in order
        assert sum(counts[start : start + size]) <= 60
        start += size
    assert result.vectors.shape == (25, 1536) and result.vectors.dtype == np.float32
    for i in (0, 13, 24):
        assert np.allclose(result.vectors[i], vector_for(texts[i], 1536), atol=1e-6)
    assert result.tokens == sum(counts)
    (line,) = result.cost
    assert line.provider == "openai" and line.resource == "tokens" and line.quantity == sum(counts)
    assert line.amount_usd == pytest.approx(sum(counts) * price("openai_token_text-embedding-3-small"))


async def test_429_retry_after_is_honoured_then_500_then_success() -> None:
    with openai_standin() as srv:
        srv.script = [(429, {"Retry-After": "1"}, {"error": {"message": "slow down", "type": "rate_limit"}}),
                      (500, {}, {"error": {"message": "boom", "type": "server_error"}})]
        emb = _embedder(srv.url)
        start = time.monotonic()
        result = await emb.embed(["hello world"])
    assert len(srv.requests) == 3
    assert srv.times[1] - srv.times[0] >= 0.95  # waited what Retry-After asked
    assert time.monotonic() - start < 5
    assert result.vectors.shape == (1, 1536) and result.tokens == 2


async def test_retries_are_bounded_and_401_fails_at_once() -> None:
    with openai_standin() as srv:
        srv.script = [(503, {}, {"error": {"message": "down"}})] * 3
        with pytest.raises(EmbeddingUnavailable) as info:
            await _embedder(srv.url, max_retries=2).embed(["x y"])
        assert info.value.retryable and len(srv.requests) == 3
        srv.script = [(401, {}, {"error": {"message": "bad key", "code": "invalid_api_key"}})]
        with pytest.raises(EmbeddingAuthError) as auth:
            await _embedder(srv.url).embed(["x y"])
        assert not auth.value.retryable and len(srv.requests) == 4


async def test_dimensions_are_sent_and_named() -> None:
    with openai_standin() as srv:
        emb = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=srv.url, dimensions=256)
        result = await emb.embed(["a b c"])
    assert emb.model == "openai:text-embedding-3-small@256"
    assert srv.requests[0]["dimensions"] == 256 and result.vectors.shape == (1, 256)
