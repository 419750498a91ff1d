"""What a document's stream says: its upload, latest results, sticky settings, deletion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app import domain
from events.types import RecordedEvent


@dataclass
class DocumentHistory:
    events: list[RecordedEvent]
    uploaded: dict[str, Any] | None = None
    conversions: dict[str, dict[str, Any]] = field(default_factory=dict)  # conversion_id -> data
    latest_conversion: dict[str, Any] | None = None
    chunk_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_chunk_set: dict[str, Any] | None = None
    chunk_request: dict[str, Any] | None = None  # latest ChunkingRequested (sticky chunk settings)
    embed_request: dict[str, Any] | None = None  # latest EmbeddingRequested (sticky model)
    deleted: bool = False
    embedded: set[tuple[str, str]] = field(default_factory=set)  # (chunk_set_id, model) with vectors

    @classmethod
    def of(cls, events: list[RecordedEvent]) -> DocumentHistory:
        h = cls(events)
        for e in events:
            if e.type == domain.DOCUMENT_UPLOADED and h.uploaded is None:
                h.uploaded = e.data
            elif e.type == domain.DOCUMENT_CONVERTED:
                h.conversions[e.data["conversion_id"]] = e.data
                h.latest_conversion = e.data
            elif e.type == domain.DOCUMENT_CHUNKED:
                h.chunk_sets[e.data["chunk_set_id"]] = e.data
                h.latest_chunk_set = e.data
            elif e.type == domain.CHUNKING_REQUESTED:
                h.chunk_request = e.data
            elif e.type == domain.EMBEDDING_REQUESTED:
                h.embed_request = e.data
            elif e.type == domain.CHUNKS_EMBEDDED:
                h.embedded.add((str(e.data["chunk_set_id"]), str(e.data["model"])))
            elif e.type == domain.DOCUMENT_DELETED:
                h.deleted = True
        return h

    def has_event(self, event_id: object) -> bool:
        return any(e.event_id == event_id for e in self.events)

    @property
    def model(self) -> str | None:
        return self.embed_request.get("model") if self.embed_request else None
