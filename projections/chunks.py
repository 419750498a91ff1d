"""The ``chunks`` projection: every document's current chunk set (plus ``chunk_sets``, one row a
document with the current set's parameters).

Latest version wins: a new ``DocumentChunked`` replaces the document's chunks; older sets stay in
the log (``v_chunk_set_history``). ``DocumentDeleted`` drops the document's chunks. Chunk ids are
``domain.chunk_id_for(chunk_set_id, ordinal)``, so replay reproduces them exactly.
"""

from __future__ import annotations

from typing import Any

from app import domain
from events.sqlfiles import query
from events.types import RecordedEvent
from projections.base import Conn, Projector, as_uuid, document_id_of, in_own_stream, unique_ids

COLUMNS = (
    "chunk_id", "document_id", "chunk_set_id", "ordinal", "text", "text_sha256",
    "pages", "heading_path", "char_start", "char_end", "token_count",
)  # fmt: skip
_HANDLED = frozenset(
    {domain.DOCUMENT_UPLOADED, domain.DOCUMENT_CONVERTED, domain.DOCUMENT_CHUNKED, domain.DOCUMENT_DELETED}
)


def chunk_records(document_id: str, data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of ``chunks`` for one DocumentChunked payload."""
    set_id = str(data["chunk_set_id"])
    doc = as_uuid(document_id)
    out = []
    for c in data.get("chunks") or ():
        ordinal = int(c["ordinal"])
        out.append(
            (
                domain.chunk_id_for(set_id, ordinal),
                doc,
                as_uuid(set_id),
                ordinal,
                str(c.get("text") or ""),
                str(c.get("text_sha256") or ""),
                [int(p) for p in c.get("pages") or ()],
                [str(h) for h in c.get("heading_path") or ()],
                c.get("char_start"),
                c.get("char_end"),
                c.get("token_count"),
            )
        )
    return out


class ChunksProjector(Projector):
    name = "chunks"
    tables = ("chunk_sets", "chunks")

    async def apply(self, conn: Conn, events: list[RecordedEvent]) -> None:
        relevant = [e for e in events if e.type in _HANDLED]
        ids = unique_ids(relevant)
        if not ids:
            return
        states: dict[str, dict[str, Any]] = {
            str(r["document_id"]): dict(r) for r in await conn.fetch(query("projections", "chunk_sets_get"), ids)
        }
        replace: dict[str, dict[str, Any] | None] = {}  # document -> chunk payload to install (None: none)
        changed: set[str] = set()
        for e in relevant:
            doc = document_id_of(e)
            if doc is None or not in_own_stream(e, doc):
                continue
            s = states.get(doc)
            if s is not None and e.stream_version <= s["stream_version"]:
                continue
            if s is None:
                s = {"document_id": doc, "chunk_set_id": None, "conversion_id": None, "parameters": None,
                     "chunk_count": 0, "deleted": False}  # fmt: skip
            s = dict(s, stream_version=e.stream_version, position=e.position)
            if e.type == domain.DOCUMENT_UPLOADED:
                s["deleted"] = False
            elif s["deleted"]:
                pass
            elif e.type == domain.DOCUMENT_CONVERTED:
                s["conversion_id"] = e.data.get("conversion_id")
            elif e.type == domain.DOCUMENT_CHUNKED and e.data.get("chunk_set_id"):
                s.update(
                    chunk_set_id=e.data["chunk_set_id"],
                    conversion_id=e.data.get("conversion_id") or s["conversion_id"],
                    parameters=e.data.get("parameters"),
                    chunk_count=len(e.data.get("chunks") or ()),
                )
                replace[doc] = e.data
            elif e.type == domain.DOCUMENT_DELETED:
                s.update(deleted=True, chunk_set_id=None, chunk_count=0)
                replace[doc] = None
            states[doc] = s
            changed.add(doc)
        if not changed:
            return
        if replace:
            await conn.execute(query("projections", "chunks_delete_documents"), list(replace))
            records = [r for doc, data in replace.items() if data is not None for r in chunk_records(doc, data)]
            if records:
                await conn.copy_records_to_table("chunks", records=records, columns=COLUMNS)
        rows = [states[d] for d in changed]
        await conn.execute(query("projections", "chunk_sets_delete"), list(changed))
        await conn.executemany(
            query("projections", "chunk_sets_insert"),
            [
                (r["document_id"], as_uuid(r["chunk_set_id"]), as_uuid(r["conversion_id"]), r["parameters"],
                 r["chunk_count"], r["deleted"], r["stream_version"], r["position"])
                for r in rows
            ],
        )  # fmt: skip
