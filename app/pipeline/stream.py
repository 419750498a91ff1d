"""A document's stream as a stage sees it: where the document stands (the one reducer,
``app.catalogue.state``) and the results a stage may build on, by id: conversions, chunk sets, the
vectors paid for outside a complete result (``EmbeddingsCached``, app.embedders.salvage) and the
embedding requests an OpenAI Batch API job owns."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.catalogue import events as ev
from app.catalogue.codec import UnknownEvent, decode
from app.catalogue.state import DocumentState, evolve
from events.store import EventStore
from events.types import RecordedEvent


@dataclass
class DocumentStream:
    state: DocumentState | None = None
    conversions: dict[str, ev.DocumentConverted] = field(default_factory=dict)  # conversion_id -> result
    chunk_sets: dict[str, ev.DocumentChunked] = field(default_factory=dict)  # chunk_set_id -> result
    latest_chunk_set_id: str | None = None  # the newest DocumentChunked, current or not
    cached: list[ev.EmbeddingsCached] = field(default_factory=list)  # paid vectors outside a ChunksEmbedded
    batch_requests: dict[str, str] = field(default_factory=dict)  # request_id -> batch_id (Batch API jobs)

    @classmethod
    def of(cls, events: list[RecordedEvent]) -> DocumentStream:
        s = cls()
        for recorded in events:
            event = decode(recorded)
            if isinstance(event, UnknownEvent):
                continue
            s.state = evolve(s.state, event, recorded)
            if isinstance(event, ev.DocumentConverted):
                s.conversions[event.conversion_id] = event
            elif isinstance(event, ev.DocumentChunked):
                s.chunk_sets[event.chunk_set_id] = event
                s.latest_chunk_set_id = event.chunk_set_id
            elif isinstance(event, ev.EmbeddingsCached):
                s.cached.append(event)
            elif isinstance(event, ev.EmbeddingRequested) and event.batch_id:
                s.batch_requests[event.request_id] = event.batch_id
        return s

    @classmethod
    async def read(cls, store: EventStore, stream_id: str) -> DocumentStream:
        return cls.of(await store.read_stream_all(stream_id))

    @property
    def current_conversion(self) -> ev.DocumentConverted | None:
        cid = self.state.conversion_id if self.state else None
        return self.conversions.get(cid) if cid else None

    @property
    def current_chunk_set(self) -> ev.DocumentChunked | None:
        sid = self.state.chunk_set_id if self.state else None
        return self.chunk_sets.get(sid) if sid else None
