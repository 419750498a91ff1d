"""Intake: store an upload's bytes in the blob store and append ``DocumentUploaded``.

Bytes are streamed (never held whole); the media type is sniffed from the first bytes, not the
filename. The same content is the same document (its id derives from the sha256) unless
``force``; a retried upload with the same idempotency key appends nothing new.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import PurePath

from app import domain
from events.blobs import BlobStore
from events.errors import ChronosError, WrongExpectedVersion
from events.store import NO_STREAM, EventStore
from events.types import NewEvent

logger = logging.getLogger(__name__)
SNIFF_BYTES = 64 * 1024


class UploadRejected(ChronosError):
    """The upload was refused; nothing was recorded."""

    status = 400


class UploadTooLarge(UploadRejected):
    """The upload is larger than the configured limit."""

    status = 413


class UnsupportedMediaType(UploadRejected):
    """The content is not a type Chronos can convert."""

    status = 415


class EmptyUpload(UploadRejected):
    """The upload has no content."""

    status = 400


@dataclass(frozen=True)
class IntakeResult:
    document_id: str
    created: bool  # False: the same content (or idempotency key) was already uploaded
    filename: str
    media_type: str
    size: int
    sha256: str
    position: int


def safe_filename(name: str | None) -> str:
    """A display name only: the last path component, control characters removed, bounded."""
    base = PurePath((name or "").replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return (cleaned or "upload")[:255]


class _Sniffer:
    """Passes chunks through while keeping the first bytes for media-type sniffing and a size cap."""

    def __init__(self, source: AsyncIterable[bytes], max_bytes: int | None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.head = bytearray()
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self.source:
            self.size += len(piece)
            if self.max_bytes is not None and self.size > self.max_bytes:
                raise UploadTooLarge(f"upload exceeds the limit of {self.max_bytes} bytes")
            if len(self.head) < SNIFF_BYTES:
                self.head.extend(piece[: SNIFF_BYTES - len(self.head)])
            yield piece


def upload_event_id(idempotency_key: str | None) -> uuid.UUID | None:
    return uuid.uuid5(domain.DOCUMENT_NAMESPACE, f"upload:{idempotency_key}") if idempotency_key else None


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
) -> IntakeResult:
    """Store the bytes and record the upload. Raises UploadRejected subclasses for refused input.

    ``reject_unsupported`` (the API): refuse empty and unconvertible content up front. Without it
    (the CLI) such files are recorded and end in a ConversionFailed event with the reason, so a
    folder ingest reports every file.
    """
    from app.convert import SUPPORTED_MEDIA_TYPES, sniff_media_type

    name = safe_filename(filename)
    sniffer = _Sniffer(chunks, max_bytes)
    ref = await blobs.put_stream(sniffer)
    if ref.size == 0 and reject_unsupported:
        raise EmptyUpload(f"{name}: the upload is empty (0 bytes)")
    # An empty file the caller chose to record (CLI) fails at conversion with a clear reason.
    media_type = sniff_media_type(bytes(sniffer.head), name) if ref.size else "application/x-empty"
    if reject_unsupported and media_type not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"{name}: content looks like {media_type}; supported are PDF, DOCX, PPTX, XLSX, HTML, Markdown, CSV"
        )
    event_id = upload_event_id(idempotency_key) or uuid.uuid4()
    document_id = uuid.uuid4() if force else domain.document_id_for_content(ref.sha256)
    metadata = {"actor": actor, "correlation_id": correlation_id or str(event_id)}

    for _attempt in range(3):
        data: domain.DocumentUploadedData = {
            "document_id": str(document_id),
            "filename": name,
            "media_type": media_type,
            "size": ref.size,
            "sha256": ref.sha256,
            "blob": {"sha256": ref.sha256, "size": ref.size, "media_type": media_type},
            "source": source,
            "source_ref": source_ref,
            "declared_media_type": declared_media_type,
        }
        stream = domain.stream_for(document_id)
        try:
            result = await store.append(
                stream,
                [NewEvent(domain.DOCUMENT_UPLOADED, dict(data), metadata, event_id=event_id)],
                NO_STREAM,
            )
            created = not result.duplicate  # duplicate: an idempotent retry of this very upload
            logger.info(
                "recorded upload %s as %s",
                name,
                document_id,
                extra={"action": "upload", "document_id": str(document_id), "media_type": media_type},
            )
            return IntakeResult(str(document_id), created, name, media_type, ref.size, ref.sha256, result.last_position)
        except WrongExpectedVersion:
            existing = await store.read_stream(stream, limit=100_000)
            if existing and existing[0].event_id == event_id:
                first = existing[0]
                return IntakeResult(
                    str(document_id),
                    False,
                    first.data["filename"],
                    first.data["media_type"],
                    ref.size,
                    ref.sha256,
                    first.position,
                )
            if existing and not any(e.type == domain.DOCUMENT_DELETED for e in existing):
                first = existing[0]
                return IntakeResult(
                    str(document_id),
                    False,
                    first.data["filename"],
                    first.data["media_type"],
                    ref.size,
                    ref.sha256,
                    first.position,
                )
            # The earlier document with this content was deleted: this upload is a new document.
            document_id = uuid.uuid4()
    raise ChronosError(f"{name}: could not record the upload after 3 attempts")
