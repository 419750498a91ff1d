"""``chronos bench NAME``: benchmarks. Each lives in ``app/bench/<name>.py`` with ``register``."""

from __future__ import annotations

import argparse
import importlib

BENCHES = [
    "events",
    "convert",
    "compare",
    "large_input",
    "replay",
    "search",
    "api",
    "revisions",
    "retrieval",
    "freshness",
    "pipeline",
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmarks (figures and ratios against a same-run baseline)")
    names = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name in BENCHES:
        importlib.import_module(f"app.bench.{name}").register(names)
