"""Directus as a source (docs/api.md, docs/revisions.md): a Directus file is a logical document keyed
``directus:<file id>``; its content is fetched from ``/assets/<id>`` with the static token.

* ``files.upload`` (also "Replace file", which keeps the id) and ``files.update``: the file's content
  again — a new revision when it changed, nothing when it did not (a metadata-only update, a redelivered
  webhook: the idempotency key carries the file's version, and content hashing dedupes within the
  document);
* ``files.delete``: the documents are deleted;
* ``sync``: lists the files changed since the last sync (``GET /files`` filtered on ``uploaded_on`` /
  ``modified_on``, paged), ingests or revises them, and deletes the documents whose file is gone (under the
  deletion guard of app/services/sync.py); the high-water mark is a ``SourceSynced`` event. Directus never
  retries a failed Flow run, so an upload made while Chronos was down arrives with the next sync.

Directus answers **403** (not 404) for a missing, deleted or forbidden file; the message says all three.

Collections and metadata (docs/collections.md): a file goes into the collection its folder is named after
(``GET /folders/<id>``), or the one a configured file field names (``CHRONOS_DIRECTUS_COLLECTION_FIELD``);
a folder or value that is not an existing collection's name sends it to
``CHRONOS_DIRECTUS_DEFAULT_COLLECTION`` (``default``), logged. Its ``title``, ``description``, ``tags`` and
folder name are its metadata, so an edit of those in Directus (``files.update``, same bytes) records a
``DocumentMetadataUpdated``. A file moved to a folder of another collection becomes a document there and
its document in the old collection is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.catalogue import events as ev
from app.catalogue.codec import decode_as, new_event
from app.catalogue.collections import DEFAULT, InvalidMetadata, validate_metadata
from app.catalogue.ids import document_id_for_key
from app.errors import InvalidRequest, NotFound, Unavailable
from app.runtime import Runtime
from app.services.collections import require as require_collection
from app.services.delete import delete_document
from app.services.documents import DocumentNotFound
from app.services.sync import MAX_DELETE_SHARE, DeletionGuard, SyncPlan, source_documents
from app.services.upload import IntakeResult, UploadRejected, ingest_stream
from events.errors import ChronosError, WrongExpectedVersion

logger = logging.getLogger(__name__)
PREFIX = "directus:"
SYNC_STREAM = "sync-directus"
PAGE = 100
FIELDS = "id,filename_download,type,filesize,uploaded_on,modified_on,folder,title,description,tags"
METADATA_FIELDS = ("title", "description", "tags")  # carried as the document's metadata (with "folder")
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class DirectusUnavailable(Unavailable):
    """Directus could not be reached or answered with an error."""

    code = "directus_unavailable"
    http_status = 502


class DirectusFileMissing(NotFound):
    """Directus has no such file for this token (it answers 403 for missing, deleted and forbidden alike)."""

    code = "directus_file_missing"
    http_status = 502


class DirectusRefused(Unavailable):
    """Directus refused the static token."""

    code = "directus_auth_failed"
    http_status = 502


class DirectusNotConfigured(InvalidRequest):
    """DIRECTUS_URL and DIRECTUS_TOKEN are not set."""

    code = "directus_not_configured"
    http_status = 503


def redact_url(url: str) -> str:
    """The URL without its user:password (never echo credentials in a message)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def document_key(file_id: str) -> str:
    return f"{PREFIX}{file_id}"


def document_of(file_id: str, collection: str = DEFAULT) -> str:
    """The document id of a Directus file in a collection (whether or not it was ingested)."""
    return str(document_id_for_key(document_key(file_id), collection))


@dataclass(frozen=True)
class DirectusFile:
    id: str
    filename_download: str | None = None
    type: str | None = None
    filesize: int | None = None
    uploaded_on: str | None = None
    modified_on: str | None = None
    folder: str | None = None  # the folder's id
    fields: dict[str, Any] = field(default_factory=dict)  # title, description, tags and the collection field

    @classmethod
    def of(cls, record: dict[str, Any], extra: tuple[str, ...] = ()) -> DirectusFile:
        size = record.get("filesize")
        folder = record.get("folder")
        if isinstance(folder, dict):  # fields=folder.* expands it
            folder = folder.get("id")
        return cls(
            id=str(record["id"]),
            filename_download=record.get("filename_download") if isinstance(record.get("filename_download"), str)
            else None,
            type=record.get("type") if isinstance(record.get("type"), str) else None,
            filesize=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
            uploaded_on=str(record["uploaded_on"]) if record.get("uploaded_on") else None,
            modified_on=str(record["modified_on"]) if record.get("modified_on") else None,
            folder=str(folder) if isinstance(folder, str | int) and folder != "" else None,
            fields={k: record.get(k) for k in (*METADATA_FIELDS, *extra)},
        )  # fmt: skip

    @property
    def version(self) -> str:
        """What changes when the file does: a redelivery of the same version is a no-op."""
        return f"{self.uploaded_on or ''}|{self.modified_on or ''}|{self.filesize if self.filesize is not None else ''}"

    @property
    def changed_on(self) -> str:
        return max(self.uploaded_on or "", self.modified_on or "")


class DirectusClient:
    """The two Directus endpoints Chronos uses, with the static token; errors say what to do."""

    def __init__(
        self, base_url: str, token: str, *, download_timeout_s: float = 600.0, extra_fields: tuple[str, ...] = ()
    ) -> None:
        self.base = base_url.rstrip("/")
        self.token = token
        self.extra_fields = extra_fields  # e.g. the CHRONOS_DIRECTUS_COLLECTION_FIELD
        self.fields = ",".join([FIELDS, *extra_fields])
        self._folders: dict[str, str | None] = {}  # folder id -> name, for one client's life (a sync, a webhook)
        self.download_timeout_s = download_timeout_s
        self.http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)

    async def __aenter__(self) -> DirectusClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.http.aclose()

    def _where(self, path: str) -> str:
        return f"{redact_url(self.base)}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _raise_for(self, status: int, path: str, file_id: str | None = None) -> None:
        if status in (401,):
            raise DirectusRefused(
                f"Directus refused DIRECTUS_TOKEN ({status} from {self._where(path)}): check the token"
            )
        if status in (403, 404) and file_id is not None:
            raise DirectusFileMissing(
                f"Directus answered {status} for file {file_id}: it is missing, deleted, or the token lacks read "
                "permission on directus_files"
            )
        if status == 403:
            raise DirectusRefused(
                f"Directus answered 403 for {self._where(path)}: the token lacks read permission on directus_files"
            )
        raise DirectusUnavailable(f"Directus answered {status} for {self._where(path)}")

    async def open(self, file_id: str) -> tuple[httpx.Response, AsyncIterator[bytes]]:
        """The download of a file: its response (headers) and its bytes, streamed, under a total deadline."""
        path = f"/assets/{file_id}"
        request = self.http.build_request("GET", self.base + path, headers=self._headers())
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DirectusUnavailable(f"could not reach Directus at {self._where(path)}: {exc}") from None
        if response.status_code != 200:
            await response.aclose()
            self._raise_for(response.status_code, path, file_id)
        return response, self._chunks(response, file_id)

    async def _chunks(self, response: httpx.Response, file_id: str) -> AsyncIterator[bytes]:
        try:
            async with asyncio.timeout(self.download_timeout_s):
                async for piece in response.aiter_bytes():
                    yield piece
        except TimeoutError:
            raise DirectusUnavailable(
                f"the download of {file_id} took longer than {self.download_timeout_s:g} s and was stopped"
            ) from None
        except httpx.HTTPError as exc:
            raise DirectusUnavailable(f"the download of {file_id} broke off: {exc}") from None
        finally:
            await response.aclose()

    async def file(self, file_id: str) -> DirectusFile:
        """One file's record (its name, type and version)."""
        path = f"/files/{file_id}"
        try:
            response = await self.http.get(self.base + path, params={"fields": self.fields}, headers=self._headers())
        except httpx.HTTPError as exc:
            raise DirectusUnavailable(f"could not reach Directus at {self._where(path)}: {exc}") from None
        if response.status_code != 200:
            self._raise_for(response.status_code, path, file_id)
        data = response.json().get("data")
        if not isinstance(data, dict) or "id" not in data:
            raise DirectusUnavailable(f"Directus answered {self._where(path)} without a file record")
        return DirectusFile.of(data, self.extra_fields)

    async def folder_name(self, folder_id: str) -> str | None:
        """The name of a folder; None when Directus has no such folder for this token (403, as for files)."""
        if folder_id in self._folders:
            return self._folders[folder_id]
        path = f"/folders/{folder_id}"
        try:
            response = await self.http.get(self.base + path, params={"fields": "id,name"}, headers=self._headers())
        except httpx.HTTPError as exc:
            raise DirectusUnavailable(f"could not reach Directus at {self._where(path)}: {exc}") from None
        if response.status_code in (403, 404):
            self._folders[folder_id] = None
            return None
        if response.status_code != 200:
            self._raise_for(response.status_code, path)
        data = response.json().get("data")
        name = data.get("name") if isinstance(data, dict) else None
        self._folders[folder_id] = name if isinstance(name, str) else None
        return self._folders[folder_id]

    async def files(self, changed_after: str | None = None, fields: str | None = None) -> AsyncIterator[DirectusFile]:
        """Every file (changed after ``changed_after``, when given), oldest change first, page by page."""
        params: dict[str, str] = {
            "fields": fields or self.fields, "sort": "uploaded_on,modified_on,id", "limit": str(PAGE)
        }  # fmt: skip
        if changed_after:
            params["filter"] = json.dumps(
                {"_or": [{"uploaded_on": {"_gt": changed_after}}, {"modified_on": {"_gt": changed_after}}]}
            )
        page = 1
        while True:
            try:
                response = await self.http.get(
                    self.base + "/files", params={**params, "page": str(page)}, headers=self._headers()
                )
            except httpx.HTTPError as exc:
                raise DirectusUnavailable(f"could not reach Directus at {self._where('/files')}: {exc}") from None
            if response.status_code != 200:
                self._raise_for(response.status_code, "/files")
            data = response.json().get("data") or []
            for record in data:
                yield DirectusFile.of(record, self.extra_fields)
            if len(data) < PAGE:
                return
            page += 1


def client_for(rt: Runtime) -> DirectusClient:
    settings = rt.settings
    if not settings.directus_url or not settings.directus_token:
        raise DirectusNotConfigured("set DIRECTUS_URL and DIRECTUS_TOKEN to take files from Directus")
    extra = (settings.directus_collection_field,) if settings.directus_collection_field else ()
    return DirectusClient(settings.directus_url, settings.directus_token, extra_fields=extra)


@dataclass(frozen=True)
class Placement:
    """Where a Directus file goes: its collection and its metadata."""

    collection: str
    metadata: dict[str, Any]
    folder_name: str | None


async def placement(rt: Runtime, client: DirectusClient, file: DirectusFile) -> Placement:
    """The file's collection (its folder's name, or the configured field's value, when that names an
    existing collection; else the configured default, logged) and its metadata."""
    settings = rt.settings
    folder_name = await client.folder_name(file.folder) if file.folder else None
    field_name = settings.directus_collection_field
    wanted = file.fields.get(field_name) if field_name else folder_name
    fallback = settings.directus_default_collection
    collection = fallback
    if wanted is not None:
        try:
            collection = await require_collection(rt.store, wanted)
        except (InvalidRequest, NotFound) as exc:
            source = f"field {field_name}" if field_name else f"folder {file.folder}"
            logger.warning("Directus file %s: its %s (%r) is not a collection; it goes into %s", file.id, source,
                           wanted, fallback, extra={"action": "directus_collection", "directus_file_id": file.id,
                                                    "wanted": str(wanted)[:100], "collection": fallback,
                                                    "reason": str(exc)})  # fmt: skip
    metadata: dict[str, Any] = {k: file.fields.get(k) for k in METADATA_FIELDS}
    metadata["folder"] = folder_name
    try:
        metadata = validate_metadata(metadata, what=f"the metadata of Directus file {file.id}")
    except InvalidMetadata as exc:  # a huge description: the file still comes in, without what does not fit
        logger.warning("Directus file %s: %s; only its title and folder are kept", file.id, exc,
                       extra={"action": "directus_metadata", "directus_file_id": file.id})  # fmt: skip
        metadata = {"title": str(metadata.get("title") or "")[:1000] or None, "folder": folder_name}
    return Placement(collection, metadata, folder_name)


async def ingest_file(
    rt: Runtime, client: DirectusClient, file: DirectusFile, *, actor: str = "directus"
) -> IntakeResult:
    """The file's current content and metadata as its document (a new revision when the content changed, a
    DocumentMetadataUpdated when only its fields did)."""
    where = await placement(rt, client, file)
    response, chunks = await client.open(file.id)
    filename = file.filename_download or _filename_from(response) or file.id
    result = await ingest_stream(
        rt.store, rt.blobs, chunks, filename=filename, source="directus", source_ref=file.id, actor=actor,
        declared_media_type=file.type or response.headers.get("content-type"),
        max_bytes=rt.settings.max_upload_bytes, reject_unsupported=True,
        idempotency_key=f"directus:{file.id}:{where.collection}:{file.version}",
        correlation_id=f"directus:{file.id}", key=document_key(file.id), collection=where.collection,
        metadata=where.metadata,
    )  # fmt: skip
    # Moved to a folder of another collection: the document in the old collection goes.
    for document_id in await _live_documents(rt, file.id, keep=result.document_id):
        await delete_document(rt.store, document_id, f"moved to collection {where.collection} in Directus", actor)
    return result


async def _live_documents(rt: Runtime, file_id: str, keep: str | None = None) -> list[str]:
    """The live documents of a Directus file, in any collection (``keep``: leave that one out)."""
    key = document_key(file_id)
    found = await source_documents(rt.pool, key)
    return [s.document_id for k, s in found.items() if k == key and s.document_id != keep]


async def delete_file(rt: Runtime, file_id: str, *, actor: str = "directus", reason: str = "") -> list[str]:
    """Delete the documents of a Directus file (in whatever collection); [] when none is live."""
    deleted = []
    for document_id in await _live_documents(rt, file_id):
        try:
            if await delete_document(rt.store, document_id, reason or "deleted in Directus", actor):
                deleted.append(document_id)
        except DocumentNotFound:
            continue
    return deleted


def _filename_from(response: httpx.Response) -> str | None:
    match = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    return match.group(1) if match else None


# --- sync ----------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    high_water: str | None
    uploaded: list[str] = field(default_factory=list)  # file ids that became a document or a revision
    unchanged: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # file id -> why
    deleted: list[str] = field(default_factory=list)
    plan: SyncPlan | None = None
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "high_water": self.high_water, "uploaded": self.uploaded, "unchanged": self.unchanged,
            "rejected": self.rejected, "deleted": self.deleted, "dry_run": self.dry_run,
            "plan": self.plan.to_json() if self.plan else None,
        }  # fmt: skip


async def last_high_water(rt: Runtime) -> tuple[str | None, int]:
    """The high-water mark of the last sync and the sync stream's version."""
    events = await rt.store.read_stream_all(SYNC_STREAM)
    for recorded in reversed(events):
        if recorded.type == ev.SourceSynced.TYPE:
            return decode_as(recorded, ev.SourceSynced).high_water, events[-1].stream_version
    return None, events[-1].stream_version if events else 0


async def sync(
    rt: Runtime, client: DirectusClient, *, dry_run: bool = False, force: bool = False,
    max_delete_share: float = MAX_DELETE_SHARE, actor: str = "sync:directus",
) -> SyncReport:  # fmt: skip
    """Make Chronos match Directus (see the module docstring); idempotent."""
    high_water, version = await last_high_water(rt)
    live = await source_documents(rt.pool, PREFIX)
    present = {f.id async for f in client.files(fields="id")}
    plan = SyncPlan(PREFIX, live=len(live))
    plan.vanished = {k: s.document_id for k, s in live.items() if k.removeprefix(PREFIX) not in present}
    report = SyncReport(high_water=high_water, plan=plan, dry_run=dry_run)
    changed = [f async for f in client.files(changed_after=high_water)]
    # Files Chronos never saw (uploaded while it was down, before the first sync) count as changed too.
    changed_ids = {f.id for f in changed}
    unseen = [fid for fid in present if document_key(fid) not in live and fid not in changed_ids]
    if unseen:
        changed += [f async for f in client.files() if f.id in set(unseen)]
    plan.new = [document_key(f.id) for f in changed if document_key(f.id) not in live]
    plan.changed = [document_key(f.id) for f in changed if document_key(f.id) in live]
    if dry_run:
        return report
    for f in changed:
        try:
            result = await ingest_file(rt, client, f, actor=actor)
        except (UploadRejected, DirectusFileMissing) as exc:
            report.rejected[f.id] = str(exc)
            continue
        if result.created:
            report.uploaded.append(f.id)
        else:
            report.unchanged += 1
        report.high_water = max(report.high_water or "", f.changed_on) or report.high_water
    guard: DeletionGuard | None = None
    try:
        plan.check_deletions(max_share=max_delete_share, force=force)
    except DeletionGuard as exc:  # new and changed files are in; only the deletions wait for --force
        guard = exc
    else:
        for key, document_id in plan.vanished.items():
            if await delete_document(rt.store, document_id, "gone from Directus", actor):
                report.deleted.append(key.removeprefix(PREFIX))
    synced = ev.SourceSynced(
        source="directus", high_water=report.high_water, uploaded=len(report.uploaded), unchanged=report.unchanged,
        deleted=len(report.deleted), rejected=len(report.rejected),
    )  # fmt: skip
    try:
        await rt.store.append(SYNC_STREAM, [new_event(synced, {"actor": actor})], version)
    except WrongExpectedVersion:  # another sync finished meanwhile; its mark covers at least as much
        logger.info("another Directus sync finished at the same time", extra={"action": "sync"})
    logger.info("synced Directus: %d uploaded, %d unchanged, %d deleted, %d rejected", *synced.counts().values(),
                extra={"action": "sync", "source": "directus", **synced.counts()})  # fmt: skip
    if guard is not None:
        raise DeletionGuard(f"{guard} (the {len(report.uploaded)} new or changed files were taken in)")
    return report


async def run_periodic(rt: Runtime, stop: asyncio.Event, interval_s: float) -> None:
    """``chronos serve``'s Directus sync: every ``interval_s`` (and at start), so a file whose webhook was
    lost is in within one interval. A failure is logged and tried again at the next interval."""
    while not stop.is_set():
        try:
            async with client_for(rt) as client:
                await sync(rt, client, actor="sync:directus:periodic")
        except ChronosError as exc:
            logger.warning("the periodic Directus sync failed: %s", exc,
                           extra={"action": "sync", "source": "directus", "error": exc.code})  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
