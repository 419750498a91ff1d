"""A stand-in for Directus 12 as Chronos meets it, faithful to what a real Directus 12.4.0 does:

* ``GET /assets/<id>`` with ``Authorization: Bearer <static token>`` streams the file; a missing,
  deleted or forbidden file answers **403** (``FORBIDDEN``), never 404; a wrong token 401
  (``INVALID_CREDENTIALS``);
* ``GET /files/<id>?fields=…`` answers ``{"data": {...}}`` (only the fields asked for, as Directus 10/11/12
  do; ``title``, ``description``, ``tags`` (a JSON array or null), ``folder`` (a folder id or null) and any
  custom field an operator added to directus_files) or 403 like the assets;
* ``GET /folders/<id>`` answers ``{"data": {"id", "name", "parent"}}``, or 403 for a missing folder;
* ``GET /files?fields=…&filter=<json>&sort=…&limit=…&page=…`` lists files as ``{"data": [...]}``
  (the ``_gt`` / ``_or`` filter operators on ``uploaded_on`` / ``modified_on``, ascending sort);
* a Flow's Event Hook + Webhook operation with body ``{{$trigger}}`` POSTs the trigger as JSON:
  ``files.upload`` names the file in ``key`` (never ``keys``); ``files.update`` and ``files.delete``
  name them in ``keys`` (delete also puts them in ``payload``); "Replace file" keeps the id and emits
  ``files.upload`` again. A failed Flow run is never retried (so nothing here redelivers by itself).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "directus-static-token"
FORBIDDEN = b'{"errors":[{"message":"You don\'t have permission to access this.","extensions":{"code":"FORBIDDEN"}}]}'
INVALID = b'{"errors":[{"message":"Invalid user credentials.","extensions":{"code":"INVALID_CREDENTIALS"}}]}'


@dataclass
class File:
    id: str
    content: bytes
    filename_download: str
    type: str
    uploaded_on: str
    modified_on: str | None = None
    folder: str | None = None
    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    custom: dict[str, Any] = field(default_factory=dict)  # fields an operator added to directus_files

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id, "filename_download": self.filename_download, "type": self.type,
            "filesize": len(self.content), "uploaded_on": self.uploaded_on, "modified_on": self.modified_on,
            "folder": self.folder, "title": self.title, "description": self.description, "tags": self.tags,
            **self.custom,
        }  # fmt: skip


@dataclass
class Folder:
    id: str
    name: str
    parent: str | None = None


@dataclass
class Directus:
    """The files of a Directus instance; tests change them and build the webhooks its Flows send."""

    url: str = ""
    files: dict[str, File] = field(default_factory=dict)
    folders: dict[str, Folder] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    clock: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC))
    down: bool = False  # answers 503 to everything (an outage on the Directus side)

    def _tick(self) -> str:
        self.clock += dt.timedelta(seconds=1)
        return self.clock.isoformat().replace("+00:00", "Z")

    def upload(
        self, file_id: str, content: bytes, filename: str, media_type: str = "text/markdown", **fields: Any
    ) -> dict[str, Any]:
        """A new file (``fields``: title, description, tags, folder, custom={...})."""
        self.files[file_id] = File(file_id, content, filename, media_type, self._tick(), **fields)
        return self.trigger("files.upload", file_id)

    def folder(self, folder_id: str, name: str, parent: str | None = None) -> str:
        self.folders[folder_id] = Folder(folder_id, name, parent)
        return folder_id

    def replace(self, file_id: str, content: bytes) -> dict[str, Any]:
        """ "Replace file": same id, new bytes, ``files.upload`` again."""
        f = self.files[file_id]
        f.content, f.uploaded_on = content, self._tick()
        return self.trigger("files.upload", file_id)

    def update(self, file_id: str, **fields: Any) -> dict[str, Any]:
        """An edit in the file's detail page (its fields, not its bytes): ``files.update``."""
        f = self.files[file_id]
        for k, v in fields.items():
            if hasattr(f, k):
                setattr(f, k, v)
            else:
                f.custom[k] = v
        f.modified_on = self._tick()
        return {"event": "files.update", "keys": [file_id], "payload": fields, "collection": "directus_files"}

    def delete(self, file_id: str) -> dict[str, Any]:
        del self.files[file_id]
        return {"event": "files.delete", "keys": [file_id], "payload": [file_id], "collection": "directus_files"}

    def trigger(self, event: str, file_id: str) -> dict[str, Any]:
        record = self.files[file_id].record()
        payload = {k: record[k] for k in ("filename_download", "type", "filesize", "uploaded_on", "title", "folder")}
        return {"event": event, "key": file_id, "payload": payload, "collection": "directus_files"}


def _matches(record: dict[str, Any], flt: dict[str, Any]) -> bool:
    if "_or" in flt:
        return any(_matches(record, f) for f in flt["_or"])
    if "_and" in flt:
        return all(_matches(record, f) for f in flt["_and"])
    for name, cond in flt.items():
        value = record.get(name)
        for op, operand in cond.items():
            if op == "_gt" and not (value is not None and str(value) > str(operand)):
                return False
            if op == "_eq" and value != operand:
                return False
    return True


def _sort_key(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda record: str(record.get(name) or "")


def _handler(directus: Directus) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            directus.requests.append(("GET", self.path))
            if directus.down:
                return self._send(503, b'{"errors":[{"message":"Service Unavailable"}]}')
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, INVALID)
            parts = url.path.strip("/").split("/")
            if len(parts) == 2 and parts[0] == "assets":
                f = directus.files.get(parts[1])
                if f is None:
                    return self._send(403, FORBIDDEN)  # Directus: missing or forbidden alike
                self.send_response(200)
                self.send_header("Content-Type", f.type)
                self.send_header("Content-Disposition", f'inline; filename="{f.filename_download}"')
                self.send_header("Content-Length", str(len(f.content)))
                self.end_headers()
                for i in range(0, len(f.content), 4096):
                    self.wfile.write(f.content[i : i + 4096])
                return None
            if parts == ["files"]:
                return self._files(parse_qs(url.query))
            if len(parts) == 2 and parts[0] == "files":
                f = directus.files.get(parts[1])
                if f is None:
                    return self._send(403, FORBIDDEN)
                record = f.record()
                q = parse_qs(url.query)
                if "fields" in q:
                    record = {k: record.get(k) for k in q["fields"][0].split(",")}
                return self._send(200, json.dumps({"data": record}).encode())
            if len(parts) == 2 and parts[0] == "folders":
                folder = directus.folders.get(parts[1])
                if folder is None:
                    return self._send(403, FORBIDDEN)
                data = {"id": folder.id, "name": folder.name, "parent": folder.parent}
                return self._send(200, json.dumps({"data": data}).encode())
            return self._send(403, FORBIDDEN)  # Directus answers unknown routes with 403 too

        def _files(self, q: dict[str, list[str]]) -> None:
            records = [f.record() for f in directus.files.values()]
            if "filter" in q:
                flt = json.loads(q["filter"][0])
                records = [r for r in records if _matches(r, flt)]
            for key in reversed((q.get("sort", [""])[0] or "").split(",")):
                if key:
                    records.sort(key=_sort_key(key.lstrip("-")), reverse=key.startswith("-"))
            limit = int(q.get("limit", ["100"])[0])
            page = int(q.get("page", ["1"])[0])
            if limit >= 0:
                records = records[(page - 1) * limit : page * limit]
            if "fields" in q:
                wanted = q["fields"][0].split(",")
                records = [{k: r.get(k) for k in wanted} for r in records]
            self._send(200, json.dumps({"data": records}).encode())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            """No access log."""

    return Handler


@contextmanager
def running() -> Iterator[Directus]:
    directus = Directus()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(directus))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    directus.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield directus
    finally:
        server.shutdown()
        server.server_close()
