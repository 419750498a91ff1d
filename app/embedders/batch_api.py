"""OpenAI's Batch API for embeddings, as OpenAI documents it: half the price, done within 24 hours.

* Input: a JSONL file uploaded with purpose ``batch``; one line per request,
  ``{"custom_id", "method": "POST", "url": "/v1/embeddings", "body": {...}}`` where the body is what
  ``/v1/embeddings`` takes (each line within that endpoint's limits: 2048 inputs, 300,000 tokens).
  A batch holds at most 50,000 requests and, for embeddings, 50,000 inputs over all its lines, in a
  file of at most 200 MB.
* ``batches.create(input_file_id, endpoint="/v1/embeddings", completion_window="24h", metadata)``;
  ``GET /batches/{id}`` moves validating -> in_progress -> finalizing -> completed, or ends failed
  (the file did not validate: ``errors``), expired (not done within the window: the requests that
  were done are in the output file, and billed) or cancelled.
* Output file: one line per request that succeeded, ``{"id", "custom_id", "response": {"status_code",
  "request_id", "body"}, "error"}``, in any order; the error file holds the requests that failed.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import openai
import orjson

from app.embedders.base import EmbeddingError
from app.embedders.openai import OpenAIEmbedder, classify

log = logging.getLogger(__name__)

ENDPOINT: Final[Literal["/v1/embeddings"]] = "/v1/embeddings"
COMPLETION_WINDOW: Final[Literal["24h"]] = "24h"
MAX_BATCH_INPUTS = 50_000
MAX_BATCH_REQUESTS = 50_000
MAX_FILE_BYTES = 190 * 1024 * 1024  # OpenAI's limit is 200 MB
RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FINISHED = frozenset({"completed", "expired", "cancelled", "failed"})
METADATA_KEY = "chronos_batch_id"


def jsonl_line(custom_id: str, embedder: OpenAIEmbedder, texts: list[str]) -> bytes:
    body = {**embedder.request_body(texts), "encoding_format": "base64"}
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}) + b"\n"


def input_texts(jsonl: bytes) -> dict[str, list[str]]:
    """{custom_id: texts} of an input file (as uploaded, kept in the blob store)."""
    out: dict[str, list[str]] = {}
    for raw in jsonl.splitlines():
        if raw.strip():
            line = orjson.loads(raw)
            texts = line["body"]["input"]
            out[str(line["custom_id"])] = [texts] if isinstance(texts, str) else [str(t) for t in texts]
    return out


@dataclass
class LineResult:
    vectors: np.ndarray | None = None  # float32 rows in the line's input order
    tokens: int = 0
    error: str | None = None


@dataclass
class BatchResults:
    lines: dict[str, LineResult] = field(default_factory=dict)

    def add_output(self, raw: bytes, dimensions: int) -> None:
        for text in raw.splitlines():
            if text.strip():
                self._add(orjson.loads(text), dimensions)

    def _add(self, line: dict[str, Any], dimensions: int) -> None:
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or {}
        body = response.get("body") or {}
        if line.get("error") or response.get("status_code") != 200:
            error = line.get("error") or body.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            status = response.get("status_code")
            self.lines[custom_id] = LineResult(error=f"{code or 'error'} (HTTP {status}): {message}")
            return
        data = sorted(body.get("data") or [], key=lambda d: int(d["index"]))
        rows = [_vector(d["embedding"]) for d in data]
        matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dimensions), np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != dimensions:
            self.lines[custom_id] = LineResult(error=f"vectors of shape {matrix.shape}, expected {dimensions} wide")
            return
        usage = body.get("usage") or {}
        tokens = int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0)
        self.lines[custom_id] = LineResult(vectors=matrix, tokens=tokens)


def _vector(value: Any) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


class BatchApi:
    """The files and batches endpoints through the SDK (its retries), errors as EmbeddingError."""

    def __init__(self, embedder: OpenAIEmbedder) -> None:
        self.embedder = embedder

    async def submit(self, jsonl: bytes, batch_id: str) -> tuple[str, str]:
        """Upload ``jsonl`` and create the batch; returns (OpenAI batch id, input file id)."""
        async with self.embedder.client() as client:
            try:
                file = await client.files.create(file=(f"chronos-{batch_id}.jsonl", jsonl, "application/jsonl"),
                                                 purpose="batch")  # fmt: skip
                batch = await client.batches.create(input_file_id=file.id, endpoint=ENDPOINT,
                                                    completion_window=COMPLETION_WINDOW,
                                                    metadata={METADATA_KEY: batch_id})  # fmt: skip
            except openai.OpenAIError as exc:
                raise classify(exc, self.embedder.model) from exc
        log.info(
            "Submitted an embedding batch",
            extra={"action": "batch_submit", "batch_id": batch_id, "openai_batch_id": batch.id, "bytes": len(jsonl)},
        )
        return batch.id, file.id

    async def status(self, openai_batch_id: str) -> Any:
        async with self.embedder.client() as client:
            try:
                return await client.batches.retrieve(openai_batch_id)
            except openai.OpenAIError as exc:
                raise classify(exc, self.embedder.model) from exc

    async def cancel(self, openai_batch_id: str) -> None:
        async with self.embedder.client() as client:
            try:
                await client.batches.cancel(openai_batch_id)
            except openai.OpenAIError as exc:
                raise classify(exc, self.embedder.model) from exc

    async def download(self, file_id: str | None) -> bytes | None:
        if not file_id:
            return None
        async with self.embedder.client() as client:
            try:
                content = await client.files.content(file_id)
            except openai.OpenAIError as exc:
                raise classify(exc, self.embedder.model) from exc
        return bytes(content.content)


def batch_errors(batch: Any) -> str:
    """A batch's own errors (a file that did not validate), as one message."""
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    parts = [f"{e.code}: {e.message}" + (f" (line {e.line})" if getattr(e, "line", None) else "") for e in errors]
    return "; ".join(parts) or f"the batch ended {batch.status}"


__all__ = ["BatchApi", "BatchResults", "EmbeddingError", "LineResult", "batch_errors", "input_texts", "jsonl_line"]
