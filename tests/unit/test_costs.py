"""Cost lines of one result: billed piece by piece, recorded as one line per provider and resource."""

from __future__ import annotations

import pytest

from app.costs import CostLine, local_cpu, openai_tokens, summed


def test_requests_of_one_result_are_summed_per_resource() -> None:
    first = CostLine("openai", "tokens", 300.0, 2e-8, {"model": "m", "request": 0, "inputs": 2048})
    second = CostLine("openai", "tokens", 12.0, 2e-8, {"model": "m", "request": 1, "inputs": 52})
    cpu = local_cpu(0.5)
    lines = summed([first, cpu, second])
    assert len(lines) == 2 and lines[1] == cpu  # another resource stays its own line
    total = lines[0]
    assert (total.provider, total.resource, total.quantity) == ("openai", "tokens", 312.0)
    assert total.unit_price_usd == pytest.approx(2e-8)
    assert total.amount_usd == pytest.approx(first.amount_usd + second.amount_usd)
    assert total.details == {"model": "m", "inputs": 2100, "requests": 2}  # no single request named


def test_a_single_line_is_left_as_it_is() -> None:
    line = openai_tokens(40, "text-embedding-3-small", batch_api=True)
    assert summed([line]) == [line] and summed([]) == []
