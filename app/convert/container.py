"""What runs inside a Modal GPU container (``app/modal_app.py`` calls these from its hooks).

``start_container`` builds the Docling converters once per container; ``run_batch`` converts one
call's documents in order and says, per document, how much container time it is billed for.

**Attribution of billed container time.** Modal bills a container from its start until it stops:
its cold start, every call it runs, and the idle time between calls, up to ``scaledown_window`` after
the last one. Each call (batch) is charged, shared equally between the documents it converted (each
document also carries its own conversion time):

* its own run time;
* if it is the container's first call: the cold start (process start to this call) and one full
  scaledown window, the idle tail every container ends with;
* otherwise: the idle time since the container's previous call (at most the scaledown window), the
  time the container was kept warm for it.

The sum over a container's calls is its billed lifetime when it shuts down after one idle window,
so the ledger's Modal total matches the bill up to what only Modal sees (scheduling, a container
stopped early, usage above the reservation), which ``chronos costs reconcile`` adjusts.

**Deadlines.** A call carries the client's deadline (``deadline_unix``). A document is started only
when it can finish, at Docling's ``document_timeout``, before that deadline and before the function's
own timeout; the others come back ``not_started`` and the client sends them again. So a call never
runs past the moment the client gives up and cancels it.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.convert.engine import Engine, models_present
from app.convert.errors import DOCLING_ERROR, ConversionFailure
from app.convert.sniff import extension_for

log = logging.getLogger(__name__)

REPLY_VERSION = 2
SAFETY_S = 15.0  # kept free before a deadline: the reply still has to be written and sent


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass
class ContainerState:
    engine: Engine
    container_id: str
    gpu: str
    device: str
    device_name: str | None
    cpu_cores: float
    memory_mib: int
    scaledown_s: float
    function_timeout_s: float
    document_timeout_s: float
    started_at: float  # unix time the container's process started
    ready_at: float
    calls: int = 0
    last_end: float | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.container_id,
            "gpu": self.gpu,
            "device": self.device,
            "device_name": self.device_name,
            "cpu_cores": self.cpu_cores,
            "memory_mib": self.memory_mib,
            "scaledown_s": self.scaledown_s,
            "function_timeout_s": self.function_timeout_s,
            "document_timeout_s": self.document_timeout_s,
            "docling_version": self.engine_version(),
            "ready_s": round(self.ready_at - self.started_at, 3),
        }

    @staticmethod
    def engine_version() -> str:
        from app.convert.options import docling_version

        return docling_version()


def _process_started_at() -> float:
    import psutil

    return float(psutil.Process(os.getpid()).create_time())


def _device_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return str(torch.cuda.get_device_name(0))


def start_container(device: str, standard_options: Any) -> ContainerState:
    """Build the converters; on CUDA the standard pipeline's models are loaded now (and must be there)."""
    engine = Engine(
        standard_options=standard_options, document_timeout=_env_float("CHRONOS_MODAL_DOCUMENT_TIMEOUT", 120.0)
    )
    if device != "cpu" or models_present():
        engine.converter("standard")  # loads layout/table/OCR models onto the device
    engine.warm_up()
    state = ContainerState(
        engine=engine,
        container_id=os.environ.get("MODAL_TASK_ID") or f"{socket.gethostname()}:{os.getpid()}",
        gpu=os.environ.get("CHRONOS_MODAL_GPU", "A10G").upper(),
        device=device,
        device_name=_device_name(device),
        cpu_cores=_env_float("CHRONOS_MODAL_CPU", 4.0),
        memory_mib=int(_env_float("CHRONOS_MODAL_MEMORY_MB", 12288)),
        scaledown_s=_env_float("CHRONOS_MODAL_SCALEDOWN", 60.0),
        function_timeout_s=_env_float("CHRONOS_MODAL_FUNCTION_TIMEOUT", 540.0),
        document_timeout_s=_env_float("CHRONOS_MODAL_DOCUMENT_TIMEOUT", 120.0),
        started_at=_process_started_at(),
        ready_at=time.time(),
    )
    log.info("container ready", extra={"container": state.describe()})
    return state


def run_batch(state: ContainerState, items: list[dict[str, Any]], deadline_unix: float | None) -> dict[str, Any]:
    """Convert ``items`` in order. Reply: ``{"version", "container": {...}, "call": {...}, "results":
    [...]}``, one result per item: ``{"ok": True, "docling_json", "markdown", "page_count", "pipeline",
    "docling_version", "convert_s", "warnings", "page_range", "usage"}``, ``{"ok": False, "failure",
    "usage"}`` or ``{"ok": False, "not_started": True}``; ``usage`` is the document's container time."""
    call_start = time.time()
    first = state.calls == 0
    held_before = (
        call_start - state.started_at if first else min(call_start - (state.last_end or call_start), state.scaledown_s)
    )
    stop_at = call_start + state.function_timeout_s - SAFETY_S
    if deadline_unix is not None:
        stop_at = min(stop_at, deadline_unix - SAFETY_S)
    results: list[dict[str, Any]] = []
    spent: list[float] = []
    with tempfile.TemporaryDirectory(prefix="chronos-modal-") as tmp:
        for n, item in enumerate(items):
            if time.time() + state.document_timeout_s > stop_at:
                results.append({"ok": False, "not_started": True})
                spent.append(0.0)
                continue
            started = time.perf_counter()
            results.append(
                _convert_one(state.engine, Path(tmp) / f"{n}.{extension_for(str(item.get('media_type')))}", item)
            )
            spent.append(time.perf_counter() - started)
    call_end = time.time()
    state.calls += 1
    state.last_end = call_end
    _attribute(results, spent, call_end - call_start, held_before, first, state)
    return {
        "version": REPLY_VERSION,
        "container": state.describe(),
        "call": {
            "first_on_container": first,
            "started_at": call_start,
            "finished_at": call_end,
            "run_s": round(call_end - call_start, 4),
            "held_before_s": round(held_before, 4),
        },
        "results": results,
    }


def _convert_one(engine: Engine, path: Path, item: dict[str, Any]) -> dict[str, Any]:
    path.write_bytes(item["data"])
    page_range = item.get("page_range")
    try:
        result = engine.convert(
            path,
            str(item["media_type"]),
            str(item.get("pipeline") or "default"),
            (int(page_range[0]), int(page_range[1])) if page_range else None,
        )
    except ConversionFailure as failure:
        return {"ok": False, "failure": failure.to_dict()}
    except Exception as exc:  # one bad document must not fail the batch
        return {"ok": False, "failure": {"error_class": DOCLING_ERROR, "message": f"{type(exc).__name__}: {exc}"}}
    finally:
        path.unlink(missing_ok=True)
    return {
        "ok": True,
        "docling_json": result.docling_json,
        "markdown": result.markdown,
        "page_count": result.page_count,
        "pipeline": result.pipeline,
        "docling_version": result.docling_version,
        "convert_s": result.convert_s,
        "warnings": result.warnings,
        "page_range": page_range,
    }


def _attribute(
    results: list[dict[str, Any]],
    spent: list[float],
    run_s: float,
    held_before: float,
    first: bool,
    state: ContainerState,
) -> None:
    """Share the call's billed container time out between the documents it converted (module doc)."""
    done = [i for i, r in enumerate(results) if not r.get("not_started")]
    if not done:
        return
    cold = held_before if first else 0.0
    idle = state.scaledown_s if first else held_before
    overhead = max(0.0, run_s - sum(spent[i] for i in done)) + cold + idle
    for i in done:
        results[i]["usage"] = {
            "container_s": round(spent[i] + overhead / len(done), 4),
            "busy_s": round(spent[i] + max(0.0, run_s - sum(spent[j] for j in done)) / len(done), 4),
            "cold_start_s": round(cold / len(done), 4),
            "idle_s": round(idle / len(done), 4),
            "started_container": first,
            "batch_documents": len(done),
        }
