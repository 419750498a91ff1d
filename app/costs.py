"""Prices and cost lines. Every paid or compute step appends a CostIncurred event built here.

Defaults come from the providers' public price lists (checked 2026; override any of them with
``CHRONOS_PRICE_<NAME>`` environment variables, in USD per unit):

* Modal GPUs, per GPU-second: A10G $0.000306 ($1.10/h), L4 $0.000222 ($0.80/h), T4 $0.000164 ($0.59/h).
* Modal containers also bill their CPU and memory: $0.0000131 per physical core-second and
  $0.00000222 per GiB-second of the reservation (``cpu=``/``memory=`` of the deployment).
  ``modal_usage`` prices a document's share of container time with all three (see
  ``app.convert.container`` for how cold starts and idle time are shared out); ``chronos costs
  reconcile`` adjusts the total to Modal's bill.
* Local CPU, per CPU-second: $0.0000131 -- Modal's price for one physical CPU core, used so local
  and Modal conversion can be compared in dollars (set it to 0 to count local compute as free).
* OpenAI embeddings, per token: text-embedding-3-small $0.02/1M, text-embedding-3-large $0.13/1M,
  text-embedding-ada-002 $0.10/1M; through the Batch API half that (``openai_batch_token_<model>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app import config
from app.catalogue.events import CostIncurred
from app.config import PRICE_PREFIX

if TYPE_CHECKING:
    from app.convert.options import ModalUsage

DEFAULT_PRICES: dict[str, float] = {
    "modal_gpu_second_a10g": 0.000306,
    "modal_gpu_second_l4": 0.000222,
    "modal_gpu_second_t4": 0.000164,
    "modal_cpu_core_second": 0.0000131,
    "modal_memory_gib_second": 0.00000222,
    "local_cpu_second": 0.0000131,
    "openai_token_text-embedding-3-small": 0.02 / 1_000_000,
    "openai_token_text-embedding-3-large": 0.13 / 1_000_000,
    "openai_token_text-embedding-ada-002": 0.10 / 1_000_000,
    "openai_batch_token_text-embedding-3-small": 0.01 / 1_000_000,
    "openai_batch_token_text-embedding-3-large": 0.065 / 1_000_000,
    "openai_batch_token_text-embedding-ada-002": 0.05 / 1_000_000,
}


def price(name: str) -> float:
    """Unit price in USD; ``CHRONOS_PRICE_<NAME>`` (upper case, '-' and '.' as '_') overrides
    (``Settings.price_overrides``)."""
    env = PRICE_PREFIX + name.upper().replace("-", "_").replace(".", "_")
    overrides = dict(config.current().price_overrides)
    if env in overrides:
        return overrides[env]
    if name not in DEFAULT_PRICES:
        raise KeyError(f"no price for {name!r}; set {env} (USD per unit)")
    return DEFAULT_PRICES[name]


@dataclass(frozen=True)
class CostLine:
    provider: str  # "modal" | "local" | "openai"
    resource: str  # "gpu_seconds" | "cpu_core_seconds" | "memory_gib_seconds" | "cpu_seconds" | "tokens" | "adjustment"
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


def modal_usage(usage: ModalUsage) -> list[CostLine]:
    """The Modal bill's three meters for a document's share of container time: GPU-seconds of the
    deployment's GPU, CPU core-seconds and memory GiB-seconds of its reservation."""
    details: dict[str, str | float | int] = {
        "gpu": usage.gpu,
        "container_s": round(usage.container_s, 4),
        "busy_s": round(usage.busy_s, 4),
        "cold_start_s": round(usage.cold_start_s, 4),
        "idle_s": round(usage.idle_s, 4),
        "batch_documents": usage.batch_documents,
        "started_container": int(usage.started_container),
        "cpu_cores": usage.cpu_cores,
        "memory_gib": round(usage.memory_gib, 4),
    }
    if usage.container_id:
        details["container"] = usage.container_id
    if usage.device:
        details["device"] = usage.device
    if usage.cancelled:
        details["cancelled"] = 1
    seconds = usage.container_s
    return [
        CostLine("modal", "gpu_seconds", seconds, price(f"modal_gpu_second_{usage.gpu.lower()}"), details),
        CostLine("modal", "cpu_core_seconds", seconds * usage.cpu_cores, price("modal_cpu_core_second"), details),
        CostLine("modal", "memory_gib_seconds", seconds * usage.memory_gib, price("modal_memory_gib_second"), details),
    ]


def modal_usages(usages: list[ModalUsage]) -> list[CostLine]:
    """Cost lines for all the Modal time one result was billed for (several attempts on the way are
    summed per GPU, so a result never has two lines of one resource: ``chronos check`` counts those
    as paid twice)."""
    from dataclasses import replace

    merged: dict[str, ModalUsage] = {}
    for usage in usages:
        seen = merged.get(usage.gpu)
        merged[usage.gpu] = (
            usage
            if seen is None
            else replace(
                seen,
                container_s=seen.container_s + usage.container_s,
                busy_s=seen.busy_s + usage.busy_s,
                cold_start_s=seen.cold_start_s + usage.cold_start_s,
                idle_s=seen.idle_s + usage.idle_s,
                started_container=seen.started_container or usage.started_container,
                cancelled=seen.cancelled or usage.cancelled,
            )
        )
    return [line for usage in merged.values() for line in modal_usage(usage)]


def modal_rate_per_second(gpu: str, cpu_cores: float, memory_gib: float) -> float:
    """USD per second of one container of the deployment (GPU + reserved CPU + reserved memory)."""
    return (
        price(f"modal_gpu_second_{gpu.lower()}")
        + cpu_cores * price("modal_cpu_core_second")
        + memory_gib * price("modal_memory_gib_second")
    )


def local_cpu(seconds: float) -> CostLine:
    return CostLine("local", "cpu_seconds", seconds, price("local_cpu_second"))


_PER_REQUEST = frozenset({"request", "custom_id"})  # details that name one request of several


def summed(lines: Sequence[CostLine]) -> list[CostLine]:
    """One line per provider and resource for one result, as ``chronos check`` wants it (two lines of one
    resource for one result count as paid twice): quantities and amounts add up, the details of the first
    line are kept without what named a single request, plus ``requests`` (how many lines were summed)
    and ``inputs`` added up when the lines have them. An OpenAI result made of several requests (or a
    Batch API document of several lines) is billed request by request; its ledger line is their sum."""
    groups: dict[tuple[str, str], list[CostLine]] = {}
    for line in lines:
        groups.setdefault((line.provider, line.resource), []).append(line)
    out: list[CostLine] = []
    for (provider, resource), group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        quantity = sum(g.quantity for g in group)
        amount = sum(g.quantity * g.unit_price_usd for g in group)
        unit = amount / quantity if quantity else group[0].unit_price_usd
        details = {k: v for k, v in (group[0].details or {}).items() if k not in _PER_REQUEST}
        if all(g.details and "inputs" in g.details for g in group):
            details["inputs"] = sum(int((g.details or {})["inputs"]) for g in group)
        details["requests"] = len(group)
        out.append(CostLine(provider, resource, quantity, unit, details))
    return out


def openai_tokens(tokens: int, model: str, *, batch_api: bool = False) -> CostLine:
    """``tokens`` of OpenAI model ``model`` (its own name, no provider or @dimensions)."""
    if batch_api:
        return CostLine("openai", "tokens", float(tokens), price(f"openai_batch_token_{model}"),
                        {"model": model, "batch_api": True})  # fmt: skip
    return CostLine("openai", "tokens", float(tokens), price(f"openai_token_{model}"), {"model": model})
