"""``POST /hooks/directus``: the Directus Flow webhook (docs/api.md "Directus").

Set up in Directus: a Flow with an *Event Hook* trigger (non-blocking, "Action") on ``files.upload``,
``files.update`` and ``files.delete``, and a *Webhook / Request URL* operation that POSTs the body
``{{$trigger}}`` to ``<chronos>/hooks/directus`` with the header ``Authorization: Bearer <a write token>``.
Directus 12 then sends::

    {"event": "files.upload", "key": "<file id>", "payload": {"filename_download": ..., "type": ...},
     "collection": "directus_files"}
    {"event": "files.update", "keys": ["<file id>", ...], "payload": {<the changed fields>}, ...}
    {"event": "files.delete", "keys": ["<file id>", ...], "payload": ["<file id>", ...], ...}

"Replace file" keeps the id and sends ``files.upload`` again. What each does is in
app/services/directus.py: upload/update take the file's current content as a revision of the document
``directus:<id>`` (nothing when the content did not change; a redelivery is a no-op), delete deletes it.
Directus never retries a failed Flow run: ``chronos sync directus`` (and the periodic sync under
``chronos serve``) brings in what a webhook missed.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import bodies
from app.api.auth import actor_of, principal_of_request, writes
from app.api.bodies import typed
from app.api.common import runtime
from app.api.errors import ApiError
from app.api.responses import json_response
from app.api.routes_documents import intake_json
from app.services import directus as service
from app.services.upload import UploadRejected
from app.services.visibility import restricted

CONTENT_EVENTS = ("files.upload", "files.update")
DELETE_EVENTS = ("files.delete",)
MAX_KEYS = 100
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
BLANK = (
    "the webhook body is empty: in the Flow's Webhook / Request URL operation set the Request Body to "
    "{{$trigger}} (and the header Content-Type: application/json)"
)


async def _body(request: Request) -> dict[str, Any]:
    import orjson

    raw = await request.body()
    if not raw.strip():
        raise ApiError(422, "invalid_webhook", BLANK)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(422, "invalid_webhook", f"the webhook body is not JSON; {BLANK.split(': ', 1)[1]}") from None
    if not isinstance(body, dict) or "event" not in body:
        raise ApiError(422, "invalid_webhook", "the webhook body is not a Directus trigger: set the Request Body "
                       "to {{$trigger}}")  # fmt: skip
    return body


def _keys(body: dict[str, Any]) -> list[str]:
    raw = body.get("keys") if body.get("keys") is not None else [body.get("key")]
    if not isinstance(raw, list) or not raw or raw == [None]:
        raise ApiError(422, "invalid_webhook", "the webhook names no file: expected key or keys")
    if len(raw) > MAX_KEYS:
        raise ApiError(422, "invalid_webhook", f"at most {MAX_KEYS} files per webhook")
    keys = []
    for key in raw:
        if not isinstance(key, str) or not _FILE_ID.match(key):
            raise ApiError(422, "invalid_webhook", f"{str(key)[:100]!r} is not a Directus file id")
        keys.append(key)
    return keys


@writes
async def directus_hook(request: Request) -> Response:
    """Directus's folders (the mapping of app/services/directus.py), not the caller, decide the collection,
    and a files.delete deletes wherever the file's document is: the hook needs a token of every collection.
    A token limited to some collections gets the 404 of a route that does not exist."""
    if restricted(principal_of_request(request)):
        raise HTTPException(404)
    rt = runtime(request)
    body = await _body(request)
    event = body.get("event")
    if body.get("collection") not in (None, "directus_files") or event not in CONTENT_EVENTS + DELETE_EVENTS:
        return json_response(
            typed(
                bodies.DirectusResult,
                {"ignored": True, "reason": f"event {event!r} is not a files event", "documents": []},
            )
        )
    keys = _keys(body)
    actor = f"directus via {actor_of(request)}"
    if event in DELETE_EVENTS:
        deleted = [doc for key in keys for doc in await service.delete_file(rt, key, actor=actor)]
        return json_response(typed(bodies.DirectusResult, {"ignored": False, "deleted": deleted, "documents": []}))
    documents: list[dict[str, Any]] = []
    async with service.client_for(rt) as client:
        for key in keys:
            try:
                file = await client.file(key)
                result = await service.ingest_file(rt, client, file, actor=actor)
            except (UploadRejected, service.DirectusFileMissing) as exc:
                if len(keys) == 1:
                    raise
                documents.append({"directus_file_id": key, "rejected": True, "reason": str(exc)})
                continue
            documents.append({"directus_file_id": key, **intake_json(result)})
    created = any(d.get("created") for d in documents)
    return json_response(
        typed(bodies.DirectusResult, {"ignored": False, "documents": documents}), status=202 if created else 200
    )


routes = [Route("/hooks/directus", directus_hook, methods=["POST"])]
