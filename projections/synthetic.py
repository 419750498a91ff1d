"""Synthetic document histories with the event shapes the stages append (app/domain.py), for the
replay and search benchmarks and for tests. Vectors are whatever the caller passes (random ones in
benchmarks): nothing here calls a model."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

import numpy as np

from app import domain
from events.blobs import PgBlobStore
from events.store import EventStore
from events.types import NewEvent

META = {"actor": "synthetic", "correlation_id": "synthetic"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class SyntheticDocument:
    """One document's stream; each method appends what a stage would append and returns ids."""

    store: EventStore
    blobs: PgBlobStore
    document_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    filename: str = "synthetic.pdf"
    conversion_id: str | None = None
    chunk_set_id: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return domain.stream_for(self.document_id)

    async def append(self, *events: NewEvent) -> None:
        await self.store.append(self.stream, list(events))

    def event(self, kind: str, data: dict[str, object]) -> NewEvent:
        return NewEvent(kind, data, META)

    async def upload(self, content: bytes = b"%PDF-1.7 synthetic") -> None:
        ref = await self.blobs.put_bytes(content, "application/pdf")
        await self.append(self.event(domain.DOCUMENT_UPLOADED, {
            "document_id": self.document_id, "filename": self.filename, "media_type": "application/pdf",
            "size": ref.size, "sha256": ref.sha256, "blob": ref.to_json(), "source": "cli",
        }))  # fmt: skip

    async def convert(self, pages: int = 3, backend: str = "local", seconds: float = 1.5) -> str:
        self.conversion_id = str(uuid.uuid4())
        md = await self.blobs.put_bytes(f"# {self.filename}\n{self.conversion_id}".encode(), "text/markdown")
        js = await self.blobs.put_bytes(b'{"name": "doc"}', "application/json")
        converted = self.event(domain.DOCUMENT_CONVERTED, {
            "document_id": self.document_id, "conversion_id": self.conversion_id, "input_sha256": sha(self.document_id),
            "backend": backend, "pipeline": "native", "docling_version": "2.0.0", "page_count": pages,
            "durations": {"total_s": seconds, "convert_s": seconds}, "docling_json": js.to_json(),
            "markdown": md.to_json(), "settings_hash": "s1",
        })  # fmt: skip
        cost = self.cost("convert", "local", "cpu_seconds", seconds, 0.0000131, str(converted.event_id))
        await self.append(converted, cost)
        return self.conversion_id

    def cost(self, stage: str, provider: str, resource: str, qty: float, unit: float, caused_by: str) -> NewEvent:
        return self.event(domain.COST_INCURRED, {
            "document_id": self.document_id, "stage": stage, "provider": provider, "resource": resource,
            "quantity": qty, "unit_price_usd": unit, "amount_usd": round(qty * unit, 10), "caused_by": caused_by,
        })  # fmt: skip

    def chunked_event(self, texts: list[str], chunk_size: int = 256) -> NewEvent:
        self.chunk_set_id = str(uuid.uuid4())
        self.texts = texts
        chunks, offset = [], 0
        for i, text in enumerate(texts):
            chunks.append({
                "ordinal": i, "text": text, "text_sha256": sha(text), "pages": [1 + i // 4],
                "heading_path": ["Synthetic", f"Section {i // 4}"], "char_start": offset,
                "char_end": offset + len(text), "token_count": max(1, len(text) // 4),
            })  # fmt: skip
            offset += len(text)
        return self.event(domain.DOCUMENT_CHUNKED, {
            "document_id": self.document_id, "chunk_set_id": self.chunk_set_id,
            "conversion_id": self.conversion_id or str(uuid.uuid4()),
            "parameters": {"splitter": "markdown+sentence", "chunk_size": chunk_size, "chunk_overlap": 0,
                           "requested_chunk_size": chunk_size, "tokenizer": "synthetic", "embedder_max_tokens": 256},
            "chunks": chunks,
        })  # fmt: skip

    async def chunk(self, texts: list[str], chunk_size: int = 256) -> str:
        await self.append(self.chunked_event(texts, chunk_size))
        assert self.chunk_set_id is not None
        return self.chunk_set_id

    async def embed(self, vectors: np.ndarray, model: str = "local:synthetic", *, tokens: int = 0,
                    price: float = 0.0, chunk_set_id: str | None = None) -> None:  # fmt: skip
        matrix = np.ascontiguousarray(vectors, dtype="<f4")
        ref = await self.blobs.put_bytes(matrix.tobytes(), "application/x-float32")
        embedded = self.event(domain.CHUNKS_EMBEDDED, {
            "document_id": self.document_id, "chunk_set_id": chunk_set_id or self.chunk_set_id, "model": model,
            "provider": model.split(":", 1)[0], "dimensions": int(matrix.shape[1]), "vectors": ref.to_json(),
            "chunk_count": int(matrix.shape[0]), "reused_count": 0, "tokens": tokens,
        })  # fmt: skip
        events = [embedded]
        if price:
            events.append(self.cost("embed", "openai", "tokens", float(tokens), price, str(embedded.event_id)))
        await self.append(*events)

    async def fail(self, stage: str, error_class: str, message: str, *, final: bool, attempt: int = 1) -> None:
        kind = {"convert": domain.CONVERSION_FAILED, "chunk": domain.CHUNKING_FAILED, "embed": domain.EMBEDDING_FAILED}
        await self.append(self.event(kind[stage], {
            "document_id": self.document_id, "stage": stage, "error_class": error_class, "message": message,
            "attempt": attempt, "retryable": not final, "final": final,
        }))  # fmt: skip

    async def request(self, stage: str, **params: object) -> None:
        kind = {"convert": domain.CONVERSION_REQUESTED, "chunk": domain.CHUNKING_REQUESTED,
                "embed": domain.EMBEDDING_REQUESTED}[stage]  # fmt: skip
        await self.append(self.event(kind, {"document_id": self.document_id, "request_id": str(uuid.uuid4()),
                                            "reason": "test", **params}))  # fmt: skip

    async def delete(self, reason: str = "test") -> None:
        await self.append(self.event(domain.DOCUMENT_DELETED, {"document_id": self.document_id, "reason": reason}))


def random_unit_vectors(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    v = rng.standard_normal((n, dims)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v
