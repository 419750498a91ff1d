"""A real HTTP server standing in for an alert webhook (Slack's incoming webhooks answer 200 ``ok``;
scripted failures answer what a failing receiver does): it records every POST it gets."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Webhook:
    url: str
    answers: list[int] = field(default_factory=list)  # statuses for the next requests, then 200
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # what was answered, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)


@contextlib.contextmanager
def webhook_server(answers: list[int] | None = None) -> Iterator[Webhook]:
    hook = Webhook(url="", answers=list(answers or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with hook.lock:
                hook.received.append(
                    {"body": json.loads(raw), "content_type": self.headers.get("Content-Type"), "path": self.path}
                )
                status = hook.answers.pop(0) if hook.answers else 200
                hook.statuses.append(status)
            payload = b"ok" if status == 200 else b"service unavailable" if status >= 500 else b"invalid_payload"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """No access log (the test output stays readable)."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret-part"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
