"""A document's metadata changed without new content (``PATCH /documents/{id}/metadata``, ``chronos
documents meta``, a metadata-only edit in Directus): one ``DocumentMetadataUpdated``, no re-conversion
and no model call. The projections rewrite the documents row and every chunk row of the document in
their transactions, so search filters see it as soon as they have applied it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.collections import apply_metadata, validate_metadata
from app.catalogue.ids import stream_for
from app.services.documents import DocumentDeleted, read_document
from events.errors import ChronosError, InvalidRequest, WrongExpectedVersion
from events.store import EventStore

logger = logging.getLogger(__name__)
MODES: tuple[ev.MetadataMode, ...] = ("merge", "replace")


@dataclass(frozen=True)
class MetadataChange:
    document_id: str
    metadata: dict[str, Any]  # the document's metadata after the change
    changed: bool  # False: it had that metadata already (nothing recorded)
    position: int | None  # of the DocumentMetadataUpdated (None when nothing was recorded)

    def to_json(self) -> dict[str, Any]:
        return {"document_id": self.document_id, "metadata": self.metadata, "changed": self.changed,
                "position": self.position}  # fmt: skip


def check_mode(mode: object) -> ev.MetadataMode:
    if mode == "merge":
        return "merge"
    if mode == "replace":
        return "replace"
    raise InvalidRequest(f"mode must be merge or replace, not {mode!r}")


async def update_metadata(
    store: EventStore, document_id: str, metadata: Mapping[str, Any], mode: object = "merge", *, actor: str
) -> MetadataChange:
    """Record new metadata for a live document; DocumentNotFound / DocumentDeleted / InvalidMetadata."""
    checked_mode = check_mode(mode)
    given = validate_metadata(metadata)
    for _attempt in range(5):
        state, events = await read_document(store, document_id)
        if state.deleted:
            raise DocumentDeleted(f"document {state.document_id} was deleted; its metadata cannot change")
        after = apply_metadata(state.metadata, given, checked_mode)
        validate_metadata(after, what="the metadata after the update")
        if after == state.metadata:
            return MetadataChange(state.document_id, after, False, None)
        event = ev.DocumentMetadataUpdated(document_id=state.document_id, metadata=given, mode=checked_mode)
        try:
            result = await store.append(stream_for(state.document_id), [new_event(event, {"actor": actor})],
                                        events[-1].stream_version)  # fmt: skip
        except WrongExpectedVersion:
            continue  # the document changed meanwhile: apply the update to what it is now
        logger.info("updated the metadata of document %s (%s)", state.document_id, checked_mode,
                    extra={"action": "metadata_update", "document_id": state.document_id, "mode": checked_mode,
                           "keys": sorted(given), "actor": actor})  # fmt: skip
        return MetadataChange(state.document_id, after, True, result.last_position)
    raise ChronosError(f"document {document_id}: could not record the metadata after 5 attempts (it is being changed)")
