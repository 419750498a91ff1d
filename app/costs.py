"""Prices and cost lines. Every paid or compute step appends a CostIncurred event built here.

Defaults come from the providers' public price lists (checked 2026; override any of them with
``CHRONOS_PRICE_<NAME>`` environment variables, in USD per unit):

* Modal GPUs, per GPU-second: A10G $0.000306 ($1.10/h), L4 $0.000222 ($0.80/h), T4 $0.000164 ($0.59/h).
* Local CPU, per CPU-second: $0.0000131 -- Modal's price for one physical CPU core, used so local
  and Modal conversion can be compared in dollars (set it to 0 to count local compute as free).
* OpenAI embeddings, per token: text-embedding-3-small $0.02/1M, text-embedding-3-large $0.13/1M,
  text-embedding-ada-002 $0.10/1M; through the Batch API half that (``openai_batch_token_<model>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from app.catalogue.events import CostIncurred

DEFAULT_PRICES: dict[str, float] = {
    "modal_gpu_second_a10g": 0.000306,
    "modal_gpu_second_l4": 0.000222,
    "modal_gpu_second_t4": 0.000164,
    "local_cpu_second": 0.0000131,
    "openai_token_text-embedding-3-small": 0.02 / 1_000_000,
    "openai_token_text-embedding-3-large": 0.13 / 1_000_000,
    "openai_token_text-embedding-ada-002": 0.10 / 1_000_000,
    "openai_batch_token_text-embedding-3-small": 0.01 / 1_000_000,
    "openai_batch_token_text-embedding-3-large": 0.065 / 1_000_000,
    "openai_batch_token_text-embedding-ada-002": 0.05 / 1_000_000,
}


def price(name: str) -> float:
    """Unit price in USD; ``CHRONOS_PRICE_<NAME>`` (upper case, '-' and '.' as '_') overrides."""
    env = "CHRONOS_PRICE_" + name.upper().replace("-", "_").replace(".", "_")
    raw = os.environ.get(env)
    if raw is not None:
        try:
            return float(raw)
        except ValueError as exc:
            raise ValueError(f"{env}={raw!r} is not a number (USD per unit)") from exc
    if name not in DEFAULT_PRICES:
        raise KeyError(f"no price for {name!r}; set {env} (USD per unit)")
    return DEFAULT_PRICES[name]


@dataclass(frozen=True)
class CostLine:
    provider: str  # "modal" | "local" | "openai"
    resource: str  # "gpu_seconds" | "cpu_seconds" | "tokens"
    quantity: float
    unit_price_usd: float
    details: dict[str, str | float | int] | None = None

    @property
    def amount_usd(self) -> float:
        return round(self.quantity * self.unit_price_usd, 10)

    def event(self, document_id: str | None, stage: str, caused_by: str) -> CostIncurred:
        return CostIncurred(
            document_id=document_id, stage=stage, provider=self.provider, resource=self.resource,
            quantity=self.quantity, unit_price_usd=self.unit_price_usd, amount_usd=self.amount_usd,
            caused_by=caused_by, details=dict(self.details) if self.details else None,
        )  # fmt: skip


def modal_gpu(seconds: float, gpu: str) -> CostLine:
    return CostLine("modal", "gpu_seconds", seconds, price(f"modal_gpu_second_{gpu.lower()}"), {"gpu": gpu})


def local_cpu(seconds: float) -> CostLine:
    return CostLine("local", "cpu_seconds", seconds, price("local_cpu_second"))


def openai_tokens(tokens: int, model: str, *, batch_api: bool = False) -> CostLine:
    """``tokens`` of OpenAI model ``model`` (its own name, no provider or @dimensions)."""
    if batch_api:
        return CostLine("openai", "tokens", float(tokens), price(f"openai_batch_token_{model}"),
                        {"model": model, "batch_api": True})  # fmt: skip
    return CostLine("openai", "tokens", float(tokens), price(f"openai_token_{model}"), {"model": model})
