"""Synthetic document histories with the event classes the stages append (app/catalogue), for the
replay and search benchmarks and for tests. Vectors are whatever the caller passes (random ones in
benchmarks): nothing here calls a model."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.content import store_content
from app.catalogue.ids import stream_for
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
        return stream_for(self.document_id)

    async def append(self, *events: NewEvent | ev.Event) -> None:
        await self.store.append(self.stream, [e if isinstance(e, NewEvent) else self.event(e) for e in events])

    def event(self, event: ev.Event) -> NewEvent:
        return new_event(event, META)

    async def upload(
        self,
        content: bytes = b"%PDF-1.7 synthetic",
        *,
        collection: str = "default",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        ref = await self.blobs.put_bytes(content, "application/pdf")
        await self.append(ev.DocumentUploaded(
            document_id=self.document_id, filename=self.filename, media_type="application/pdf",
            size=ref.size, sha256=ref.sha256, blob=ev.BlobRef.of(ref), source="cli", collection=collection,
            metadata=metadata or {},
        ))  # fmt: skip

    async def update_metadata(self, metadata: dict[str, Any], mode: ev.MetadataMode = "merge") -> None:
        await self.append(ev.DocumentMetadataUpdated(document_id=self.document_id, metadata=metadata, mode=mode))

    async def convert(self, pages: int = 3, backend: str = "local", seconds: float = 1.5) -> str:
        self.conversion_id = str(uuid.uuid4())
        md = await self.blobs.put_bytes(f"# {self.filename}\n{self.conversion_id}".encode(), "text/markdown")
        js = await self.blobs.put_bytes(b'{"name": "doc"}', "application/json")
        converted = self.event(ev.DocumentConverted(
            document_id=self.document_id, conversion_id=self.conversion_id, input_sha256=sha(self.document_id),
            backend=backend, pipeline="native", docling_version="2.0.0", page_count=pages,
            durations=ev.Durations(total_s=seconds, convert_s=seconds), docling_json=ev.BlobRef.of(js),
            markdown=ev.BlobRef.of(md), settings_hash="s1",
        ))  # fmt: skip
        cost = self.cost("convert", "local", "cpu_seconds", seconds, 0.0000131, str(converted.event_id))
        await self.append(converted, cost)
        return self.conversion_id

    def cost(self, stage: str, provider: str, resource: str, qty: float, unit: float, caused_by: str) -> NewEvent:
        return self.event(ev.CostIncurred(
            document_id=self.document_id, stage=stage, provider=provider, resource=resource, quantity=qty,
            unit_price_usd=unit, amount_usd=round(qty * unit, 10), caused_by=caused_by,
        ))  # fmt: skip

    async def chunked_event(self, texts: list[str], chunk_size: int = 256) -> NewEvent:
        self.chunk_set_id = str(uuid.uuid4())
        self.texts = texts
        chunks, offset = [], 0
        for i, text in enumerate(texts):
            chunks.append(ev.Chunk(
                ordinal=i, text=text, text_sha256=sha(text), pages=[1 + i // 4],
                heading_path=["Synthetic", f"Section {i // 4}"], char_start=offset,
                char_end=offset + len(text), token_count=max(1, len(text) // 4),
            ))  # fmt: skip
            offset += len(text)
        bare, content = await store_content(self.blobs, chunks)
        return self.event(ev.DocumentChunked(
            document_id=self.document_id, chunk_set_id=self.chunk_set_id,
            conversion_id=self.conversion_id or str(uuid.uuid4()),
            parameters=ev.ChunkParameters(splitter="markdown+sentence", chunk_size=chunk_size, chunk_overlap=0,
                                          requested_chunk_size=chunk_size, tokenizer="synthetic",
                                          embedder_max_tokens=256),
            chunks=bare, content=content,
        ))  # fmt: skip

    async def chunk(self, texts: list[str], chunk_size: int = 256) -> str:
        await self.append(await self.chunked_event(texts, chunk_size))
        assert self.chunk_set_id is not None
        return self.chunk_set_id

    async def embed(self, vectors: np.ndarray, model: str = "local:synthetic", *, tokens: int = 0,
                    price: float = 0.0, chunk_set_id: str | None = None) -> None:  # fmt: skip
        matrix = np.ascontiguousarray(vectors, dtype="<f4")
        ref = await self.blobs.put_bytes(matrix.tobytes(), "application/x-float32")
        embedded = self.event(ev.ChunksEmbedded(
            document_id=self.document_id, chunk_set_id=chunk_set_id or self.chunk_set_id or "",
            model=model, provider=model.split(":", 1)[0], dimensions=int(matrix.shape[1]), vectors=ev.BlobRef.of(ref),
            chunk_count=int(matrix.shape[0]), reused_count=0, tokens=tokens,
        ))  # fmt: skip
        events = [embedded]
        if price:
            events.append(self.cost("embed", "openai", "tokens", float(tokens), price, str(embedded.event_id)))
        await self.append(*events)

    async def fail(self, stage: ev.Stage, error_class: str, message: str, *, final: bool, attempt: int = 1) -> None:
        await self.append(ev.FAILURES[stage](
            document_id=self.document_id, stage=stage, error_class=error_class, message=message,
            attempt=attempt, retryable=not final, final=final,
        ))  # fmt: skip

    async def request(self, stage: ev.Stage, **params: object) -> None:
        kinds: dict[str, type[ev.DocumentEvent]] = {
            "convert": ev.ConversionRequested,
            "chunk": ev.ChunkingRequested,
            "embed": ev.EmbeddingRequested,
        }
        fields = {"document_id": self.document_id, "request_id": str(uuid.uuid4()), "reason": "test", **params}
        await self.append(msgspec.convert(fields, kinds[stage]))

    async def delete(self, reason: str = "test") -> None:
        await self.append(ev.DocumentDeleted(document_id=self.document_id, reason=reason))


def random_unit_vectors(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    v = rng.standard_normal((n, dims)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v
