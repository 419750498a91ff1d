"""Chunk content (texts and heading paths) kept in a blob per chunk set, so that deleting a document
and collecting its blobs forgets what it said; the log keeps only provenance and hashes."""

from __future__ import annotations

import msgspec

from app.catalogue import events as ev
from events.blobs import BlobStore

MEDIA_TYPE = "application/x-chronos-chunk-content+json"


async def store_content(
    blobs: BlobStore, chunks: list[ev.Chunk], contents: list[ev.ChunkContent] | None = None
) -> tuple[list[ev.Chunk], ev.BlobRef]:
    """Put the chunks' texts and heading paths (or ``contents``: with titles and contexts) in a blob;
    returns the chunks without them and its ref."""
    content = (
        contents
        if contents is not None
        else [ev.ChunkContent(text=c.text or "", heading_path=list(c.heading_path or ())) for c in chunks]
    )
    ref = await blobs.put_bytes(msgspec.json.encode(content), MEDIA_TYPE)
    bare = [msgspec.structs.replace(c, text=None, heading_path=None) for c in chunks]
    return bare, ev.BlobRef.of(ref)


async def load_content(blobs: BlobStore, chunked: ev.DocumentChunked) -> list[ev.ChunkContent]:
    """Text and heading path of every chunk of a set, in the order of ``chunked.chunks``
    (raises events.errors.BlobNotFound when the content was collected with its deleted document)."""
    if chunked.content is None:
        return [ev.ChunkContent(text=c.text or "", heading_path=list(c.heading_path or ())) for c in chunked.chunks]
    return msgspec.json.decode(await blobs.get_bytes(chunked.content.sha256), type=list[ev.ChunkContent])


def embed_input(context: str, text: str) -> str:
    """What the embedder sees for a chunk: its context, a blank line, its text (issue 14; the context
    is made by app/chunk_context.py, and its hash is the chunk's ``embed_sha256``)."""
    return f"{context}\n\n{text}" if context else text


def embed_inputs(content: list[ev.ChunkContent]) -> list[str]:
    """What the embed stage embeds for each chunk: its context and its text (the text alone when the
    set has no context)."""
    return [embed_input(c.context, c.text) for c in content]


async def full_chunks(blobs: BlobStore, chunked: ev.DocumentChunked) -> list[ev.Chunk]:
    """The chunks with their text and heading path filled in."""
    content = await load_content(blobs, chunked)
    return [
        msgspec.structs.replace(c, text=x.text, heading_path=list(x.heading_path))
        for c, x in zip(chunked.chunks, content, strict=True)
    ]
