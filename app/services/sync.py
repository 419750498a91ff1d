"""Make Chronos match a source: a folder (``chronos ingest DIR --sync``) or Directus (``chronos sync
directus``). A plan compares the source's files (key → content hash) with the source's live
documents in the log: new keys are uploaded, changed ones get a new revision, keys gone from the
source are deleted. A deletion guard stops a sync that would delete more than a share of the
source's live documents (default 15 %): it deletes nothing and says so, unless forced — so an
unmounted folder or an emptied Directus folder cannot wipe an index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.catalogue.state import DocumentState
from app.errors import Conflict
from app.services.documents import document_states
from events.sqlfiles import query

MAX_DELETE_SHARE = 0.15


class DeletionGuard(Conflict):
    """The sync would delete too large a share of the source's documents."""

    code = "deletion_guard"
    exit_code = 2


@dataclass
class SyncPlan:
    source: str  # the key prefix, e.g. "folder:/data/policies:" or "directus:"
    new: list[str] = field(default_factory=list)  # keys
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    vanished: dict[str, str] = field(default_factory=dict)  # key -> document id
    live: int = 0  # live documents of the source before the sync

    @property
    def delete_share(self) -> float:
        return len(self.vanished) / self.live if self.live else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "new": sorted(self.new),
            "changed": sorted(self.changed),
            "unchanged": len(self.unchanged),
            "vanished": sorted(self.vanished),
            "live_before": self.live,
            "delete_share": round(self.delete_share, 4),
        }

    def check_deletions(self, *, max_share: float = MAX_DELETE_SHARE, force: bool = False) -> None:
        """DeletionGuard when the plan deletes more than ``max_share`` of the source's live documents."""
        if force or not self.vanished or self.delete_share <= max_share:
            return
        raise DeletionGuard(
            f"the sync would delete {len(self.vanished)} of the {self.live} live documents of {self.source!r} "
            f"({self.delete_share:.0%}, more than {max_share:.0%}): nothing was deleted. If the source really lost "
            "them, run again with --force (is the folder mounted? the right Directus folder?)"
        )


async def source_documents(pool: asyncpg.Pool, prefix: str, collection: str | None = None) -> dict[str, DocumentState]:
    """Live documents whose key starts with ``prefix``, by key, from the log (not the projection);
    ``collection``: only those in it (the same key in two collections is two documents)."""
    rows = await pool.fetch(query("sync", "streams_with_key_prefix"), prefix)
    states = await document_states(pool, [str(r["document_id"]) for r in rows])
    return {
        s.document_key: s
        for s in states.values()
        if s.document_key and not s.deleted and (collection is None or s.collection == collection)
    }


async def plan(pool: asyncpg.Pool, prefix: str, files: dict[str, str], *, collection: str | None = None) -> SyncPlan:
    """The plan for a source whose files are ``files`` (key → sha256 of the content)."""
    live = await source_documents(pool, prefix, collection)
    out = SyncPlan(prefix, live=len(live))
    for key, sha in files.items():
        state = live.get(key)
        if state is None:
            out.new.append(key)
        elif state.sha256 != sha:
            out.changed.append(key)
        else:
            out.unchanged.append(key)
    out.vanished = {key: s.document_id for key, s in live.items() if key not in files}
    return out
