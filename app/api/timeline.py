"""A document's state read straight from its stream: status (the documents projection's own fold,
so it agrees with the table), per-stage timeline with timings, costs and errors.

Reading the stream rather than the projection means a client sees its own upload at once, before
the projectors have caught up.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app import domain
from app.pipeline.dispatcher import STAGE_FOR
from events.types import RecordedEvent
from projections.documents import fold

# A ChunkingUnchanged asks the embed stage only for models that have not embedded the set yet.
_TRIGGERS = {k: v for k, v in STAGE_FOR.items() if k != domain.CHUNKING_UNCHANGED}
_RESULTS = {
    domain.DOCUMENT_CONVERTED: "convert",
    domain.CONVERSION_FAILED: "convert",
    domain.DOCUMENT_CHUNKED: "chunk",
    domain.CHUNKING_FAILED: "chunk",
    domain.CHUNKING_UNCHANGED: "chunk",
    domain.CHUNKS_EMBEDDED: "embed",
    domain.EMBEDDING_FAILED: "embed",
}
_DETAIL_KEYS = ("backend", "pipeline", "page_count", "model", "provider", "dimensions", "reused_count", "tokens")


def document_state(events: list[RecordedEvent]) -> dict[str, Any] | None:
    """The documents row for this stream (None when it holds no upload)."""
    state: dict[str, Any] | None = None
    for e in events:
        doc = e.data.get("document_id") or domain.document_id_from_stream(e.stream_id)
        state = fold(state, e, str(doc))
    return state


def stages(events: list[RecordedEvent], jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest run of each stage: queued/running/done/retrying/failed with timestamps and seconds."""
    runs: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.type == domain.DOCUMENT_DELETED:
            break
        result_stage = _RESULTS.get(e.type)
        if result_stage is not None:
            run = runs.setdefault(result_stage, _run(result_stage, None))
            failed = e.type.endswith("Failed")
            run["finished_at"] = e.recorded_at
            run["status"] = ("failed" if e.data.get("final") else "retrying") if failed else "done"
            run["attempts"] = int(e.data.get("attempt") or run["attempts"] or 1) if failed else run["attempts"]
            run["error"] = {"class": e.data.get("error_class"), "message": e.data.get("message")} if failed else None
            if run["queued_at"] is not None:
                run["duration_s"] = round((e.recorded_at - run["queued_at"]).total_seconds(), 3)
            if not failed:
                run["details"] = {k: e.data[k] for k in _DETAIL_KEYS if k in e.data}
                durations = e.data.get("durations")
                if isinstance(durations, dict):
                    run["details"]["durations"] = durations
        trigger_stage = _TRIGGERS.get(e.type)
        if trigger_stage is not None:
            runs[trigger_stage] = _run(trigger_stage, e)
    for job in jobs:  # the queue knows whether a stage is running right now
        current = runs.get(job["stage"])
        if current is not None and current["status"] in ("queued", "retrying") and job["status"] == "running":
            current["status"] = "running"
            current["attempts"] = job["attempts"]
    return [runs.get(stage) or _run(stage, None, status="pending") for stage in domain.STAGES]


def _run(stage: str, trigger: RecordedEvent | None, status: str = "queued") -> dict[str, Any]:
    return {
        "stage": stage,
        "status": status,
        "queued_at": trigger.recorded_at if trigger is not None else None,
        "finished_at": None,
        "duration_s": None,
        "attempts": 0,
        "error": None,
        "details": {},
    }


def costs(events: list[RecordedEvent]) -> dict[str, Any]:
    total = Decimal(0)
    by_stage: dict[str, Decimal] = {}
    lines = []
    for e in events:
        if e.type != domain.COST_INCURRED:
            continue
        amount = Decimal(str(e.data.get("amount_usd") or 0))
        total += amount
        stage = str(e.data.get("stage"))
        by_stage[stage] = by_stage.get(stage, Decimal(0)) + amount
        lines.append(
            {
                "stage": stage,
                "provider": e.data.get("provider"),
                "resource": e.data.get("resource"),
                "quantity": e.data.get("quantity"),
                "amount_usd": float(amount),
                "recorded_at": e.recorded_at,
            }
        )
    return {"total_usd": float(total), "by_stage": {k: float(v) for k, v in by_stage.items()}, "lines": lines}


def errors(events: list[RecordedEvent]) -> list[dict[str, Any]]:
    return [
        {
            "stage": _RESULTS[e.type],
            "error_class": e.data.get("error_class"),
            "message": e.data.get("message"),
            "attempt": e.data.get("attempt"),
            "final": bool(e.data.get("final")),
            "recorded_at": e.recorded_at,
        }
        for e in events
        if e.type in (domain.CONVERSION_FAILED, domain.CHUNKING_FAILED, domain.EMBEDDING_FAILED)
    ]
