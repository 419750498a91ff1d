"""bench freshness: a probe's seconds split by stage from its events' recorded_at."""

from __future__ import annotations

from datetime import UTC, datetime

from app.bench.freshness import stage_gaps


def _event(kind: str, at: float, **data: object) -> dict[str, object]:
    return {"type": kind, "recorded_at": datetime.fromtimestamp(at, UTC).isoformat(), "data": data}


def test_stage_gaps_split_the_probe_between_its_events() -> None:
    events = [
        _event("DocumentUploaded", 100.05),
        _event("DocumentConverted", 100.25, durations={"convert_s": 0.12}),
        _event("DocumentChunked", 100.30),
        _event("ChunksEmbedded", 100.40),
        _event("ChunksEmbedded", 100.90),  # a later one (a re-embed) does not move the stage
    ]
    gaps = stage_gaps(events, posted=100.0, seen=100.5)
    assert gaps == {
        "docling_convert": 0.12,
        "upload": 0.05,
        "to_converted": 0.2,
        "to_chunked": 0.05,
        "to_embedded": 0.1,
        "to_seen_searchable": 0.1,
    }
    assert abs(sum(v for k, v in gaps.items() if k != "docling_convert") - 0.5) < 1e-6


def test_stage_gaps_without_every_stage_give_only_what_is_known() -> None:
    events = [_event("DocumentUploaded", 100.05), _event("DocumentConverted", 100.2, durations={"convert_s": 0.1})]
    assert stage_gaps(events, posted=100.0, seen=100.3) == {"docling_convert": 0.1}
