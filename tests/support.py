"""Small helpers shared by tests: stage requests as `chronos reprocess` appends them."""

from __future__ import annotations

from typing import Any

from app.catalogue.events import Stage
from app.services.reprocess import StageRequest, request_stage
from events.store import EventStore


async def request(store: EventStore, stage: Stage, ids: list[str], **settings: Any) -> int:
    """Append the stage's request for each document (what `chronos reprocess` does after its checks)."""
    settings.setdefault("reason", "test")
    return await request_stage(store, StageRequest(stage=stage, **settings), ids, actor="test")
