"""Where a set of documents stands, read from the log; used by ``chronos ingest --wait``."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app import domain
from events.sqlfiles import query


@dataclass(frozen=True)
class DocProgress:
    document_id: str
    converted: bool
    chunked: bool
    embedded: bool
    deleted: bool
    failure: str | None

    @property
    def status(self) -> str:
        if self.deleted:
            return "deleted"
        if self.embedded:
            return "searchable"
        if self.failure:
            return "failed"
        if self.chunked:
            return "embedding"
        if self.converted:
            return "chunking"
        return "converting"

    @property
    def final(self) -> bool:
        return self.status in domain.FINAL_STATUSES


async def progress(pool: asyncpg.Pool, document_ids: list[str]) -> dict[str, DocProgress]:
    streams = [domain.stream_for(d) for d in document_ids]
    out: dict[str, DocProgress] = {}
    for row in await pool.fetch(query("pipeline", "progress"), streams):
        doc = domain.document_id_from_stream(row["stream_id"]) or row["stream_id"]
        out[doc] = DocProgress(doc, row["converted"], row["chunked"], row["embedded"], row["deleted"], row["failure"])
    return out
