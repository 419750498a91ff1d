"""Intake: store an upload's bytes in the blob store and append ``DocumentUploaded``.

Bytes are streamed (never held whole); the media type is sniffed from the first bytes, not the
filename. The same content is the same document (its id derives from the sha256) unless
``force``: uploading it again is a no-op while the document lives, and brings the same stream back
after a deletion (concurrent re-uploads race on the stream version: one appends, the others see it).
A retried upload with the same idempotency key appends nothing new.

Collections and metadata (docs/collections.md): an upload goes into an existing collection (``default``
unless given; an unknown one is refused before any byte is read) and the same content is the same
document only within a collection. Its metadata is checked first too; the same content uploaded again
with metadata the document does not have yet records a ``DocumentMetadataUpdated`` (merge), not a
second document.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from app.catalogue import events as ev
from app.catalogue import ids
from app.catalogue.codec import new_event
from app.catalogue.collections import DEFAULT, apply_metadata, validate_metadata
from app.catalogue.state import fold
from events.blobs import BlobStore
from events.errors import ChronosError, WrongExpectedVersion
from events.store import NO_STREAM, EventStore

logger = logging.getLogger(__name__)
SNIFF_BYTES = 64 * 1024


class UploadRejected(ChronosError):
    """The upload was refused; nothing was recorded."""

    code = "upload_rejected"
    http_status = 400
    exit_code = 2


class UploadTooLarge(UploadRejected):
    """The upload is larger than the configured limit."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(UploadRejected):
    """The content is not a type Chronos can convert."""

    code = "unsupported_media_type"
    http_status = 415


class EmptyUpload(UploadRejected):
    """The upload has no content."""

    code = "empty_upload"


@dataclass(frozen=True)
class IntakeResult:
    document_id: str
    created: bool  # False: the same content (or idempotency key) was already uploaded
    filename: str
    media_type: str
    size: int
    sha256: str
    position: int
    revision: int = 1  # the document's revision that holds this content
    key: str | None = None
    collection: str = DEFAULT
    metadata_updated: bool = False  # the same content again, with new metadata: a DocumentMetadataUpdated


def safe_filename(name: str | None) -> str:
    """A display name only: the last path component, control characters removed, bounded."""
    base = PurePath((name or "").replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return (cleaned or "upload")[:255]


class _Sniffer:
    """Reads the first bytes (for media-type sniffing) before anything is stored, then passes every
    chunk through, refusing the upload as soon as it passes the size cap."""

    def __init__(self, source: AsyncIterable[bytes], max_bytes: int | None) -> None:
        self.source = aiter(source)
        self.max_bytes = max_bytes
        self.head = bytearray()
        self.size = 0
        self._read: list[bytes] = []  # chunks read for the head, not yet passed on

    async def read_head(self) -> bytes:
        """The first ``SNIFF_BYTES`` (fewer when the upload is shorter), read ahead of storing."""
        while len(self.head) < SNIFF_BYTES:
            try:
                piece = await anext(self.source)
            except StopAsyncIteration:
                break
            self._count(piece)
            self._read.append(piece)
            self.head.extend(piece[: SNIFF_BYTES - len(self.head)])
        return bytes(self.head)

    def _count(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise UploadTooLarge(f"the upload exceeds the limit of {self.max_bytes} bytes (CHRONOS_MAX_UPLOAD_BYTES)")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read, self._read = self._read, []
        for piece in read:
            yield piece
        async for piece in self.source:
            self._count(piece)
            yield piece


async def ingest_stream(
    store: EventStore,
    blobs: BlobStore,
    chunks: AsyncIterable[bytes],
    *,
    filename: str | None,
    source: str,
    actor: str,
    source_ref: str | None = None,
    declared_media_type: str | None = None,
    force: bool = False,
    max_bytes: int | None = None,
    reject_unsupported: bool = False,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    key: str | None = None,
    collection: str = DEFAULT,
    metadata: Mapping[str, Any] | None = None,
) -> IntakeResult:
    """Store the bytes and record the upload. Raises UploadRejected subclasses for refused input.

    ``key`` (docs/revisions.md): the logical document's key. The document is then identified by the key,
    new content under it is a new revision, and the bytes its current revision already has are a no-op.
    Without a key the content is the document.

    ``reject_unsupported`` (the API): refuse empty and unconvertible content up front. Without it
    (the CLI) such files are recorded and end in a ConversionFailed event with the reason, so a
    folder ingest reports every file.
    """
    from app.convert import sniff_media_type
    from app.convert.sniff import unsupported
    from app.services.collections import require as require_collection

    # Refused before any byte is read or stored: an unknown collection, metadata out of bounds.
    collection = await require_collection(store, collection)
    given = validate_metadata(metadata or {})
    name = safe_filename(filename)
    sniffer = _Sniffer(chunks, max_bytes)
    # The media type is decided from the first bytes before anything is stored: a refused upload
    # (API) leaves no blob behind. An empty or unconvertible file the caller chose to record (CLI)
    # fails at conversion with the same reason the API refuses it with.
    head = await sniffer.read_head()
    media_type = sniff_media_type(head, name) if head else "application/x-empty"
    refused = unsupported(media_type, name, len(head), declared_media_type) if reject_unsupported else None
    if refused is not None:
        raise (EmptyUpload if refused[0] == "EmptyFile" else UnsupportedMediaType)(refused[1])
    ref = await blobs.put_stream(sniffer)
    event_id = ids.upload_event_id(idempotency_key) if idempotency_key else uuid.uuid4()
    if key is not None:
        document_id = str(ids.document_id_for_key(key, collection))
    else:
        document_id = str(uuid.uuid4() if force else ids.document_id_for_content(ref.sha256, collection))
    event_meta = {"actor": actor, "correlation_id": correlation_id or str(event_id)}
    stream = ids.stream_for(document_id)
    for _attempt in range(5):
        existing = await store.read_stream_all(stream)
        if any(e.event_id == event_id for e in existing):
            # An idempotent retry of this very upload.
            first = next(e for e in existing if e.event_id == event_id)
            return IntakeResult(document_id, False, first.data["filename"], first.data["media_type"], ref.size,
                                ref.sha256, first.position, int(first.data.get("revision") or 1), key,
                                collection)  # fmt: skip
        state = fold(existing)
        if state is not None and not state.deleted and (key is None or state.sha256 == ref.sha256):
            # The same content is the same live document (or its current revision): nothing to record,
            # unless it comes with metadata the document does not have yet.
            position, updated = state.last_position, False
            if apply_metadata(state.metadata, given, "merge") != state.metadata:
                update = ev.DocumentMetadataUpdated(document_id=document_id, metadata=given, mode="merge")
                try:
                    appended = await store.append(stream, [new_event(update, event_meta)], existing[-1].stream_version)
                except WrongExpectedVersion:
                    continue
                position, updated = appended.last_position, True
                logger.info("same content as document %s: recorded its new metadata", document_id,
                            extra={"action": "metadata_update", "document_id": document_id, "source": source,
                                   "keys": sorted(given)})  # fmt: skip
            return IntakeResult(document_id, False, state.filename, state.media_type or media_type, ref.size,
                                ref.sha256, position, state.revision, key, collection, updated)  # fmt: skip
        # A new document, a new revision under the key, or content again after a deletion: the same
        # stream goes on (a concurrent upload to it makes the append fail; then look again).
        revision = state.revision + 1 if state is not None else 1
        uploaded = ev.DocumentUploaded(
            document_id=document_id, filename=name, media_type=media_type, size=ref.size, sha256=ref.sha256,
            blob=ev.BlobRef(sha256=ref.sha256, size=ref.size, media_type=media_type), source=source,
            source_ref=source_ref, declared_media_type=declared_media_type, key=key, revision=revision,
            collection=collection, metadata=given,
        )  # fmt: skip
        expected = existing[-1].stream_version if existing else NO_STREAM
        try:
            result = await store.append(stream, [new_event(uploaded, event_meta, event_id)], expected)
        except WrongExpectedVersion:
            continue
        logger.info("recorded upload %s as %s revision %d", name, document_id, revision,
                    extra={"action": "upload", "document_id": document_id, "media_type": media_type,
                           "revision": revision, "collection": collection})  # fmt: skip
        return IntakeResult(document_id, not result.duplicate, name, media_type, ref.size, ref.sha256,
                            result.last_position, revision, key, collection)  # fmt: skip
    raise ChronosError(f"{name}: could not record the upload after 5 attempts (the document is being changed)")
