"""A local OpenAI-compatible /v1/embeddings server for tests: records every request and answers
with scripted failures first, then deterministic vectors and real tiktoken usage."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from app.embedders.openai import load_encoding


def vector_for(text: str, dims: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class StandIn:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)


@contextmanager
def openai_standin() -> Iterator[StandIn]:
    state = StandIn()
    enc = load_encoding()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            """Keep the test output quiet (no access log)."""

        def do_POST(self) -> None:
            import time

            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state.requests.append(body)
                state.times.append(time.monotonic())
                scripted = state.script.pop(0) if state.script else None
            if scripted is not None:
                status, headers, payload = scripted
                self._send(status, payload, headers)
                return
            inputs = body["input"]
            dims = body.get("dimensions") or 1536
            data = []
            for i, text in enumerate(inputs):
                v = vector_for(text, dims)
                emb: Any = (base64.b64encode(v.tobytes()).decode() if body.get("encoding_format") == "base64"
                            else v.tolist())
                data.append({"object": "embedding", "index": i, "embedding": emb})
            tokens = sum(len(enc.encode_ordinary(t)) for t in inputs)
            self._send(200, {"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
