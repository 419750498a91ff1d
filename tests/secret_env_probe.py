"""Run by tests/test_process_env.py as ``python -m tests.secret_env_probe``, with fake secrets in its
environment: starts a local converter pool (the fork server and one converter process, which
converts a document), prints the pids of every process it started as one JSON line, and keeps them
alive until its stdin is closed, so the test can read their ``/proc/<pid>/environ``."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import orjson
import psutil

from app.convert.local import ConverterPool
from app.convert.options import ConvertOptions


def main() -> None:
    pool = ConverterPool(size=1)
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / "probe.md"
        doc.write_text("# Probe\n\nA converter process that parsed this file.\n")
        out = pool.convert(doc, "text/markdown", ConvertOptions(backend="local"))
        children = [p.pid for p in psutil.Process().children(recursive=True)]
        print(orjson.dumps({"pid": os.getpid(), "children": children, "markdown": out.markdown}).decode(), flush=True)
        sys.stdin.read()
    pool.close()


if __name__ == "__main__":
    main()
