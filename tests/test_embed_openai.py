"""The OpenAI embedder with the real openai client (its own retries) against a local stand-in server."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import Settings
from app.costs import price
from app.embedders import (
    EmbedderUnavailable,
    EmbeddingAuthError,
    EmbeddingQuotaExceeded,
    EmbeddingRequestError,
    EmbeddingUnavailable,
    get_embedder,
    resolve_model,
)
from app.embedders.openai import OpenAIEmbedder
from tests.openai_standin import openai_standin, quota_exceeded, rate_limited, server_error, vector_for


def _embedder(url: str, key: str = "test-key", **kw: object) -> OpenAIEmbedder:
    return OpenAIEmbedder("text-embedding-3-small", api_key=key, base_url=url, **kw)  # type: ignore[arg-type]


async def test_batches_respect_input_and_token_limits_and_each_request_is_a_cost_line() -> None:
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
    assert result.tokens == sum(counts) == srv.billed_tokens
    assert len(result.cost) == len(sizes)  # one line per billed request
    assert [line.details["inputs"] for line in result.cost if line.details] == sizes
    assert all(line.provider == "openai" and line.resource == "tokens" for line in result.cost)
    total = sum(line.amount_usd for line in result.cost)
    assert total == pytest.approx(srv.billed_tokens * price("openai_token_text-embedding-3-small"))


async def test_the_sdk_waits_what_retry_after_ms_asks_then_retries_a_500() -> None:
    with openai_standin() as srv:
        srv.script = [rate_limited(retry_after_ms=400), server_error(500)]
        result = await _embedder(srv.url).embed(["hello world"])
    assert len(srv.requests) == 3
    assert srv.times[1] - srv.times[0] >= 0.39  # retry-after-ms honoured (Retry-After says 1 s: ms wins)
    assert result.vectors.shape == (1, 1536) and result.tokens == 2 == srv.billed_tokens


async def test_retries_are_bounded_and_the_error_is_retryable_unavailable() -> None:
    with openai_standin() as srv:
        srv.script = [server_error(503)] * 3
        with pytest.raises(EmbeddingUnavailable) as info:
            await _embedder(srv.url, max_retries=2).embed(["x y"])
    assert info.value.retryable and info.value.status == 503 and len(srv.requests) == 3


async def test_a_retry_after_beyond_two_minutes_is_not_waited_for() -> None:
    with openai_standin() as srv:
        srv.script = [
            (
                429,
                {"Retry-After": "600"},
                {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
            )
        ]
        with pytest.raises(EmbeddingUnavailable) as info:
            await _embedder(srv.url).embed(["x y"])
    assert info.value.retryable and len(srv.requests) == 1


async def test_wrong_key_quota_and_unknown_model_fail_at_once_with_their_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHRONOS_PRICE_OPENAI_TOKEN_TEXT_EMBEDDING_9", "0.0000001")
    with openai_standin() as srv:
        srv.api_keys = {"sk-good"}
        with pytest.raises(EmbeddingAuthError) as auth:
            await _embedder(srv.url, key="sk-bad").embed(["x y"])
        assert not auth.value.retryable and auth.value.status == 401 and len(srv.requests) == 0  # refused at the door

        srv.script = [quota_exceeded()]
        with pytest.raises(EmbeddingQuotaExceeded) as quota:
            await _embedder(srv.url, key="sk-good").embed(["x y"])
        assert not quota.value.retryable and len(srv.requests) == 1  # the SDK alone would retry this 429

        unknown = OpenAIEmbedder("text-embedding-9", api_key="sk-good", base_url=srv.url, dimensions=64)
        with pytest.raises(EmbeddingRequestError) as missing:
            await unknown.embed(["x y"])
        assert missing.value.status == 404 and "does not exist" in str(missing.value) and len(srv.requests) == 2
    assert srv.billed_tokens == 0


async def test_a_later_request_failing_for_good_keeps_the_paid_ones() -> None:
    texts = [f"paragraph {i} on harbours" for i in range(5)]
    with openai_standin() as srv:
        srv.script = [None, server_error(500), server_error(500)]  # request 1 answered, request 2 never
        with pytest.raises(EmbeddingUnavailable) as info:
            await _embedder(srv.url, max_batch_inputs=2, max_retries=1).embed(texts)
    partial = info.value.partial
    assert partial is not None and partial.texts == texts[:2]
    assert np.allclose(partial.vectors, np.stack([vector_for(t, 1536) for t in texts[:2]]), atol=1e-6)
    assert partial.tokens == srv.billed_tokens > 0
    assert [line.quantity for line in partial.cost] == [srv.billed_tokens]


async def test_dimensions_are_sent_and_named() -> None:
    with openai_standin() as srv:
        emb = OpenAIEmbedder("text-embedding-3-small", api_key="k", base_url=srv.url, dimensions=256)
        result = await emb.embed(["a b c"])
    assert emb.model == "openai:text-embedding-3-small@256"
    assert srv.requests[0]["dimensions"] == 256 and result.vectors.shape == (1, 256)


def test_model_names_resolve_once_for_everyone() -> None:
    keyed = Settings(openai_api_key="k")
    assert resolve_model("text-embedding-3-large", Settings()).stored == "openai:text-embedding-3-large"
    assert resolve_model("openai:text-embedding-3-small@512", keyed).stored == "openai:text-embedding-3-small@512"
    assert resolve_model("openai:text-embedding-3-small@1536", keyed).stored == "openai:text-embedding-3-small"
    assert resolve_model(None, keyed).stored == "openai:text-embedding-3-small"
    assert resolve_model(None, Settings()).stored == "local:all-MiniLM-L6-v2"
    with pytest.raises(EmbedderUnavailable, match="at most 3072"):
        resolve_model("openai:text-embedding-3-large@5000", keyed)
    with pytest.raises(EmbedderUnavailable, match="at most 4000"):
        resolve_model("openai:my-model@4096", keyed)
    with pytest.raises(EmbedderUnavailable, match="at most 4000"):
        get_embedder("openai:my-model@4096", keyed)  # refused before anything is built
    with pytest.raises(EmbedderUnavailable, match="fixed size"):
        resolve_model("text-embedding-ada-002@512", keyed)
