"""``POST /hooks/directus``: Directus Flow webhook for ``files.upload`` → intake.

Set up in Directus: a Flow with an *Event Hook* trigger on ``files.upload`` (non-blocking) and a
*Webhook / Request URL* operation that POSTs ``{{$trigger}}`` to ``<chronos>/hooks/directus`` with
the header ``Authorization: Bearer <one of CHRONOS_API_TOKENS>``. The body then looks like
``{"event": "files.upload", "key": "<file id>", "payload": {"filename_download": ..., "type": ...},
"collection": "directus_files"}`` (``keys`` instead of ``key`` for batch events).

For each file id Chronos fetches ``{DIRECTUS_URL}/assets/{id}`` with ``Authorization: Bearer
{DIRECTUS_TOKEN}`` and streams it into intake with ``source="directus"`` and the file id as
``source_ref``. The idempotency key ``directus:<id>`` makes a redelivered webhook a no-op.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api.auth import writes
from app.api.common import json_body, runtime
from app.api.errors import ApiError
from app.api.responses import json_response
from app.api.routes_documents import intake_json
from app.services.upload import UploadRejected, ingest_stream

UPLOAD_EVENTS = ("files.upload",)
MAX_KEYS = 100
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _keys(body: dict[str, Any]) -> list[str]:
    raw = body.get("keys") if body.get("keys") is not None else [body.get("key")]
    if not isinstance(raw, list) or not raw or raw == [None]:
        raise ApiError(422, "invalid_webhook", "the webhook names no file: expected key or keys")
    if len(raw) > MAX_KEYS:
        raise ApiError(422, "invalid_webhook", f"at most {MAX_KEYS} files per webhook")
    keys = []
    for key in raw:
        if not isinstance(key, str) or not _FILE_ID.match(key):
            raise ApiError(422, "invalid_webhook", f"{key!r} is not a Directus file id")
        keys.append(key)
    return keys


class _Fetch:
    """An open GET on ``/assets/{id}``; raises ApiError with a clear reason for Directus failures."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str, file_id: str) -> None:
        self.client = client
        self.url = f"{base}/assets/{file_id}"
        self.token = token
        self.file_id = file_id
        self.response: httpx.Response | None = None

    async def open(self) -> httpx.Response:
        request = self.client.build_request("GET", self.url, headers={"Authorization": f"Bearer {self.token}"})
        try:
            self.response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ApiError(502, "directus_unreachable", f"could not reach Directus at {self.url}: {exc}") from None
        status = self.response.status_code
        if status == 200:
            return self.response
        await self.response.aclose()
        if status == 404:
            raise ApiError(502, "directus_not_found", f"Directus has no file {self.file_id} (404 from /assets)")
        if status in (401, 403):
            raise ApiError(502, "directus_auth_failed", f"Directus refused DIRECTUS_TOKEN ({status} from /assets)")
        raise ApiError(502, "directus_error", f"Directus answered {status} for /assets/{self.file_id}")

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self.response is not None
        try:
            async for piece in self.response.aiter_bytes():
                yield piece
        except httpx.HTTPError as exc:
            raise ApiError(502, "directus_unreachable", f"the download of {self.file_id} broke off: {exc}") from None
        finally:
            await self.response.aclose()


@writes
async def directus_hook(request: Request) -> Response:
    rt = runtime(request)
    settings = rt.settings
    body = await json_body(request, required=True)
    event = body.get("event")
    if event not in UPLOAD_EVENTS:
        return json_response({"ignored": True, "reason": f"event {event!r} is not files.upload", "documents": []})
    keys = _keys(body)
    if not settings.directus_url or not settings.directus_token:
        raise ApiError(503, "directus_not_configured", "set DIRECTUS_URL and DIRECTUS_TOKEN to accept Directus uploads")
    raw_payload = body.get("payload")
    payload: dict[str, Any] = raw_payload if isinstance(raw_payload, dict) else {}
    documents = []
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
        for key in keys:
            fetch = _Fetch(client, settings.directus_url, settings.directus_token, key)
            response = await fetch.open()
            filename = payload.get("filename_download") if len(keys) == 1 else None
            declared = payload.get("type") if len(keys) == 1 else None
            if not isinstance(filename, str):
                filename = _filename_from(response) or key
            try:
                result = await ingest_stream(
                    rt.store,
                    rt.blobs,
                    fetch.chunks(),
                    filename=filename,
                    source="directus",
                    source_ref=key,
                    actor="directus",
                    declared_media_type=declared if isinstance(declared, str) else response.headers.get("content-type"),
                    max_bytes=settings.max_upload_bytes,
                    reject_unsupported=True,
                    idempotency_key=f"directus:{key}",
                    correlation_id=f"directus:{key}",
                )
            except UploadRejected as exc:
                if len(keys) == 1:
                    raise
                documents.append({"directus_file_id": key, "rejected": True, "reason": str(exc)})
                continue
            documents.append({"directus_file_id": key, **intake_json(result)})
    created = any(d.get("created") for d in documents)
    return json_response({"ignored": False, "documents": documents}, status=202 if created else 200)


def _filename_from(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    return match.group(1) if match else None


routes = [Route("/hooks/directus", directus_hook, methods=["POST"])]
