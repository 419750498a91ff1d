"""``chronos sample [DIR]``: write Chronos's own small sample set (Markdown, HTML, CSV, PDF, DOCX, text)
into DIR (default ``./samples``), for a first run without a corpus: ``chronos ingest DIR --wait``."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from app.samples import write_samples


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sample", help="write a small sample set of documents to ingest (no corpus needed)")
    p.add_argument("folder", nargs="?", type=Path, default=Path("samples"), help="where (default ./samples)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = write_samples(args.folder)
    if args.json:
        print(orjson.dumps([str(f) for f in files]).decode())
    else:
        print(
            f"wrote {len(files)} sample documents to {args.folder}/ (ingest them: chronos ingest {args.folder} --wait)"
        )
    return 0
