"""Facts a projector looks up in the log itself (immutable, so always consistent with any
checkpoint): the chunks of a chunk set, and when a document was deleted or uploaded again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.catalogue import events as ev
from app.catalogue.codec import decode_as
from app.catalogue.ids import document_id_from_stream, stream_for
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn


@dataclass(frozen=True)
class ChunkSetRows:
    """Ordinals and text hashes of a chunk set, in ordinal order (the vectors blob's row order)."""

    ordinals: list[int]
    text_sha256: list[str]


def rows_of_chunked(chunked: ev.DocumentChunked) -> ChunkSetRows:
    chunks = sorted(chunked.chunks, key=lambda c: c.ordinal)
    # the cache key is the hash of what was embedded: context + text since issue 14, else the text
    return ChunkSetRows([c.ordinal for c in chunks], [c.embed_sha256 or c.text_sha256 for c in chunks])


async def chunk_sets(conn: Conn, wanted: dict[str, str], seen: dict[str, ChunkSetRows]) -> dict[str, ChunkSetRows]:
    """Rows of each chunk set in ``wanted`` ({chunk_set_id: document_id}): from ``seen`` (events of
    the batch) or else from the DocumentChunked event in the document's stream."""
    found = {k: v for k, v in seen.items() if k in wanted}
    missing = [k for k in wanted if k not in found]
    if missing:
        streams = sorted({stream_for(wanted[k]) for k in missing})
        for r in await conn.fetch(query("projections", "chunk_set_rows"), streams, missing):
            found[r["chunk_set_id"]] = ChunkSetRows(list(r["ordinals"]), list(r["hashes"]))
    return found


class DeletionTimeline:
    """Whether a document is deleted as of a given stream version, from its Uploaded/Deleted events."""

    def __init__(self, marks: dict[str, list[tuple[int, bool]]]) -> None:
        self._marks = marks

    @classmethod
    async def load(cls, conn: Conn, document_ids: Iterable[str]) -> DeletionTimeline:
        streams = sorted({stream_for(d) for d in document_ids})
        marks: dict[str, list[tuple[int, bool]]] = {}
        if streams:
            for r in await conn.fetch(query("projections", "deletion_marks"), streams):
                doc = document_id_from_stream(r["stream_id"]) or ""
                marks.setdefault(doc, []).append((r["stream_version"], r["type"] == ev.DocumentDeleted.TYPE))
        return cls(marks)

    def deleted_at(self, document_id: str, version: int) -> bool:
        """Deleted as of ``version`` (the latest mark at or before it is a deletion)?"""
        state = False
        for v, deleted in self._marks.get(document_id, ()):
            if v > version:
                break
            state = deleted
        return state

    def deleted_after(self, document_id: str, version: int) -> bool:
        """Deleted at some point after ``version``?"""
        return any(deleted and v > version for v, deleted in self._marks.get(document_id, ()))


def chunked_events(events: Iterable[RecordedEvent]) -> dict[str, ChunkSetRows]:
    """Rows of the chunk sets of a batch's DocumentChunked events (the first event of a set wins)."""
    found: dict[str, ChunkSetRows] = {}
    for e in events:
        if e.type == ev.DocumentChunked.TYPE:
            chunked = decode_as(e, ev.DocumentChunked)
            found.setdefault(chunked.chunk_set_id, rows_of_chunked(chunked))
    return found
