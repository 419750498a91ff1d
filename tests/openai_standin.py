"""A local stand-in for the OpenAI API, for tests that use the real ``openai`` client.

It behaves as OpenAI documents (and as its error bodies look on the wire):

* ``POST /v1/embeddings``: bearer key required (401 ``invalid_api_key``); 404 ``model_not_found`` for
  an unknown model; 400 ``invalid_request_error`` for an empty input, more than 2048 inputs, an input
  over 8191 tokens, more than 300,000 tokens in one request, ``dimensions`` on ada-002 or above the
  model's size. A 200 answer has deterministic vectors (float or base64 float32) and the real
  ``cl100k_base`` token count as ``usage``; every 200 answer is billed (``billed_tokens``).
* Scripted answers (``script``, ``None`` for "answer normally") go first: ``rate_limited()`` (429
  with ``retry-after-ms`` and ``Retry-After``), ``quota_exceeded()`` (429 ``insufficient_quota``),
  ``server_error()`` (500/503).
* Files and batches (``/v1/files``, ``/v1/batches``): upload with purpose ``batch`` (multipart),
  ``GET /v1/files/{id}`` and ``/content``; a batch moves validating -> in_progress -> finalizing ->
  completed, one step per ``GET /v1/batches/{id}`` (``hold_batches`` keeps it in_progress); at
  validation a bad file fails the batch (``errors``); ``expire_after_lines`` makes it expire with
  only that many lines done (their results are in the output file and billed, as OpenAI does);
  ``POST /v1/batches/{id}/cancel`` -> cancelling -> cancelled. Output: one line per ``custom_id``
  ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``; requests that
  failed go to the error file with their status code and error body. Batch tokens are billed
  separately (``batch_billed_tokens``), at half price on OpenAI's side.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from app.embedders.openai import load_encoding

NATIVE = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8191
MAX_REQUEST_TOKENS = 300_000
MAX_BATCH_INPUTS = 50_000
BATCH_STEPS = ("validating", "in_progress", "finalizing", "completed")
Scripted = tuple[int, dict[str, str], dict[str, Any]]


def vector_for(text: str, dims: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def rate_limited(retry_after_ms: int = 200, kind: str = "requests") -> Scripted:
    """A 429 as OpenAI sends it: both headers (the SDK prefers ``retry-after-ms``)."""
    seconds = max(1, round(retry_after_ms / 1000))
    return (429, {"retry-after-ms": str(retry_after_ms), "Retry-After": str(seconds)},
            error_body(f"Rate limit reached for text-embedding-3-small on {kind} per min (RPM): Limit 3000. "
                       "Please try again shortly.", kind, "rate_limit_exceeded"))  # fmt: skip


def quota_exceeded() -> Scripted:
    return (429, {}, error_body("You exceeded your current quota, please check your plan and billing details.",
                                "insufficient_quota", "insufficient_quota"))  # fmt: skip


def server_error(status: int = 500) -> Scripted:
    message = "The server had an error while processing your request. Sorry about that!"
    return (status, {}, error_body(message if status == 500 else "Service unavailable", "server_error"))


@dataclass
class StandIn:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)  # every /embeddings body received
    times: list[float] = field(default_factory=list)
    script: list[Scripted | None] = field(default_factory=list)  # None: answer this request normally
    api_keys: set[str] | None = None  # None: any bearer key is accepted
    billed_tokens: int = 0  # synchronous /embeddings answered 200
    billed_inputs: list[str] = field(default_factory=list)
    batch_billed_tokens: int = 0  # Batch API requests that completed
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> object + "content"
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_gets: int = 0
    hold_batches: bool = False
    expire_after_lines: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received_inputs(self) -> list[str]:
        return [t for body in self.requests for t in (body["input"] if isinstance(body["input"], list)
                                                        else [body["input"]])]  # fmt: skip


class _Api:
    """Request handling, independent of the HTTP plumbing."""

    def __init__(self, state: StandIn) -> None:
        self.state = state
        self.enc = load_encoding()
        self.ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids):06d}"

    # --- embeddings ---------------------------------------------------------------------------

    def embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], int]:
        """(status, answer, tokens billed) for one /v1/embeddings body."""
        model = body.get("model")
        if model not in NATIVE:
            return 404, error_body(f"The model `{model}` does not exist or you do not have access to it.",
                                   "invalid_request_error", "model_not_found"), 0  # fmt: skip
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
            return 400, error_body("'$.input' is invalid. Please check the API reference.",
                                   "invalid_request_error", None, "input"), 0  # fmt: skip
        if len(inputs) > MAX_INPUTS:
            return 400, error_body(f"'$.input' is invalid: at most {MAX_INPUTS} inputs per request.",
                                   "invalid_request_error", None, "input"), 0  # fmt: skip
        counts = [len(self.enc.encode_ordinary(t)) for t in inputs]
        if max(counts) > MAX_INPUT_TOKENS:
            return 400, error_body(
                f"This model's maximum context length is {MAX_INPUT_TOKENS + 1} tokens, however you requested "
                f"{max(counts)} tokens in the input. Please reduce your input.", "invalid_request_error",
                None, "input"), 0  # fmt: skip
        if sum(counts) > MAX_REQUEST_TOKENS:
            return 400, error_body(f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                                   "max_tokens_per_request", "max_tokens_per_request", None), 0  # fmt: skip
        dims = body.get("dimensions")
        if dims is not None and (model == "text-embedding-ada-002" or not 1 <= int(dims) <= NATIVE[model]):
            return 400, error_body("This model does not support specifying dimensions." if model.endswith("002")
                                   else f"dimensions must be between 1 and {NATIVE[model]}",
                                   "invalid_request_error", None, "dimensions"), 0  # fmt: skip
        size = int(dims or NATIVE[model])
        data = []
        for i, text in enumerate(inputs):
            v = vector_for(text, size)
            emb: Any = base64.b64encode(v.tobytes()).decode() if body.get("encoding_format") == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(counts)
        answer = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
        return 200, answer, tokens

    # --- files --------------------------------------------------------------------------------

    def upload(self, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if "file" not in fields:
            return 400, error_body("'file' is a required property", "invalid_request_error", None, "file")
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            return 400, error_body(f"'{purpose}' is not one of the allowed purposes", "invalid_request_error",
                                   None, "purpose")  # fmt: skip
        filename, content = fields["file"]
        return 200, self.store_file(filename or "upload.jsonl", purpose, content)

    def store_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        obj: dict[str, Any] = {"id": self.new_id("file"), "object": "file", "bytes": len(content),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
               "expires_at": None, "status_details": None}  # fmt: skip
        self.state.files[obj["id"]] = {**obj, "content": content}
        return obj

    def file(self, file_id: str) -> tuple[int, dict[str, Any]]:
        found = self.state.files.get(file_id)
        if found is None:
            return 404, error_body(f"No such File object: {file_id}", "invalid_request_error", None, "id")
        return 200, {k: v for k, v in found.items() if k != "content"}

    # --- batches ------------------------------------------------------------------------------

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file = self.state.files.get(str(body.get("input_file_id")))
        if file is None:
            return 400, error_body(f"Invalid 'input_file_id': '{body.get('input_file_id')}'. File not found.",
                                   "invalid_request_error", None, "input_file_id")  # fmt: skip
        if file["purpose"] != "batch":
            return 400, error_body("The input file must be uploaded with the purpose 'batch'.",
                                   "invalid_request_error", None, "input_file_id")  # fmt: skip
        if body.get("completion_window") != "24h":
            return 400, error_body("completion_window must be '24h'", "invalid_request_error", None,
                                   "completion_window")  # fmt: skip
        now = int(time.time())
        batch = {"id": self.new_id("batch"), "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": file["id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}  # fmt: skip
        self.state.batches[batch["id"]] = batch
        return 200, batch

    def get_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.state.batches.get(batch_id)
        if batch is None:
            return 404, error_body(f"No batch found with id '{batch_id}'.", "invalid_request_error", None, "id")
        self.state.batch_gets += 1
        self.advance(batch)
        return 200, batch

    def list_batches(self, query: str) -> tuple[int, dict[str, Any]]:
        params = dict(re.findall(r"([^&=]+)=([^&]*)", query))
        items = sorted(self.state.batches.values(), key=lambda b: b["id"], reverse=True)  # newest first
        if "after" in params:
            items = [b for b in items if b["id"] < params["after"]]
        limit = int(params.get("limit", 20))
        page = items[:limit]
        return 200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                     "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}  # fmt: skip

    def cancel_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.state.batches.get(batch_id)
        if batch is None:
            return 404, error_body(f"No batch found with id '{batch_id}'.", "invalid_request_error", None, "id")
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return 409, error_body(f"Cannot cancel a batch with status '{batch['status']}'.",
                                   "invalid_request_error")  # fmt: skip
        batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return 200, batch

    def advance(self, batch: dict[str, Any]) -> None:
        now = int(time.time())
        status = batch["status"]
        if status == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)
        elif status == "validating":
            errors = self.validate(batch)
            if errors:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            else:
                batch.update(status="in_progress", in_progress_at=now)
        elif status == "in_progress" and not self.state.hold_batches:
            batch.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            self.run(batch, now)

    def lines(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        content = self.state.files[batch["input_file_id"]]["content"]
        return [json.loads(line) for line in content.decode().splitlines() if line.strip()]

    def validate(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        inputs = 0
        try:
            lines = self.lines(batch)
        except ValueError:
            return [{"code": "invalid_json_line", "message": "The file has a line that is not valid JSON.",
                     "param": None, "line": None}]  # fmt: skip
        for n, line in enumerate(lines, 1):
            if str(line.get("custom_id")) in seen:
                errors.append(
                    {
                        "code": "duplicate_custom_id",
                        "line": n,
                        "param": "custom_id",
                        "message": "The custom_id for this request is a duplicate of another request.",
                    }
                )
            seen.add(str(line.get("custom_id")))
            if line.get("method") != "POST" or line.get("url") != batch["endpoint"]:
                errors.append({"code": "invalid_url", "line": n, "param": "url",
                               "message": f"The URL provided for this request does not match the batch "
                                          f"endpoint {batch['endpoint']}."})  # fmt: skip
            raw = (line.get("body") or {}).get("input")
            inputs += len(raw) if isinstance(raw, list) else 1
        if inputs > MAX_BATCH_INPUTS:
            errors.append({"code": "too_many_inputs", "line": None, "param": None,
                           "message": f"An embeddings batch holds at most {MAX_BATCH_INPUTS} inputs; this one has "
                                      f"{inputs}."})  # fmt: skip
        batch["request_counts"]["total"] = len(lines)
        return errors

    def run(self, batch: dict[str, Any], now: int) -> None:
        out: list[str] = []
        err: list[str] = []
        lines = self.lines(batch)
        limit = self.state.expire_after_lines
        done = lines if limit is None else lines[:limit]
        for line in done:
            status, answer, tokens = self.embeddings(dict(line.get("body") or {}))
            self.state.batch_billed_tokens += tokens
            record = {"id": self.new_id("batch_req"), "custom_id": line["custom_id"],
                      "response": {"status_code": status, "request_id": self.new_id("req"), "body": answer},
                      "error": None}  # fmt: skip
            (out if status == 200 else err).append(json.dumps(record))
        if limit is not None:
            for line in lines[limit:]:
                err.append(json.dumps({"id": self.new_id("batch_req"), "custom_id": line["custom_id"],
                                       "response": None, "error": {"code": "batch_expired", "message":
                                       "This request could not be executed before the completion window "
                                       "expired."}}))  # fmt: skip
        batch["request_counts"].update(completed=len(out), failed=len(err))
        if out:
            batch["output_file_id"] = self.store_file("batch_output.jsonl", "batch_output",
                                                      ("\n".join(out) + "\n").encode())["id"]  # fmt: skip
        if err:
            batch["error_file_id"] = self.store_file("batch_errors.jsonl", "batch_output",
                                                     ("\n".join(err) + "\n").encode())["id"]  # fmt: skip
        if limit is None:
            batch.update(status="completed", completed_at=now)
        else:
            batch.update(status="expired", expired_at=now)


@contextmanager
def openai_standin() -> Iterator[StandIn]:
    state = StandIn()
    api = _Api(state)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            """Keep the test output quiet (no access log)."""

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
            if key and (state.api_keys is None or key in state.api_keys):
                return True
            self._send(401, error_body(f"Incorrect API key provided: {key[:3]}***. You can find your API key at "
                                       "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                                       "invalid_api_key"))  # fmt: skip
            return False

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self) -> None:
            raw = self._body()
            if not self._authorized():
                return
            path = self.path.split("?", 1)[0]
            with state.lock:
                if path == "/v1/embeddings":
                    body = json.loads(raw)
                    state.requests.append(body)
                    state.times.append(time.monotonic())
                    scripted = state.script.pop(0) if state.script else None
                    if scripted is not None:
                        status, headers, payload = scripted
                        self._send(status, payload, headers)
                        return
                    status, answer, tokens = api.embeddings(body)
                    if status == 200:
                        state.billed_tokens += tokens
                        state.billed_inputs += (
                            list(body["input"]) if isinstance(body["input"], list) else [body["input"]]
                        )
                    self._send(status, answer)
                elif path == "/v1/files":
                    self._send(*api.upload(self.headers.get("Content-Type", ""), raw))
                elif path == "/v1/batches":
                    self._send(*api.create_batch(json.loads(raw)))
                elif m := re.fullmatch(r"/v1/batches/([^/]+)/cancel", path):
                    self._send(*api.cancel_batch(m.group(1)))
                else:
                    self._send(404, error_body(f"Invalid URL (POST {path})", "invalid_request_error"))

        def do_GET(self) -> None:
            if not self._authorized():
                return
            path, _, query = self.path.partition("?")
            with state.lock:
                if m := re.fullmatch(r"/v1/files/([^/]+)/content", path):
                    found = state.files.get(m.group(1))
                    if found is None:
                        self._send(*api.file(m.group(1)))
                    else:
                        self._send_raw(200, found["content"], "application/octet-stream")
                elif m := re.fullmatch(r"/v1/files/([^/]+)", path):
                    self._send(*api.file(m.group(1)))
                elif path == "/v1/batches":
                    self._send(*api.list_batches(query))
                elif m := re.fullmatch(r"/v1/batches/([^/]+)", path):
                    self._send(*api.get_batch(m.group(1)))
                else:
                    self._send(404, error_body(f"Invalid URL (GET {path})", "invalid_request_error"))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

        def _send_raw(self, status: int, raw: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("x-request-id", api.new_id("req"))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
