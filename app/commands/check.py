"""``chronos check``: verify the log, the blob store and the projections; exit 1 on errors."""

from __future__ import annotations

import argparse

import orjson

from app.check import run_checks
from app.runtime import open_runtime


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="integrity checks of the log, blobs and projections (exit 1 on errors)")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    async with open_runtime() as rt:
        report = await run_checks(rt.pool)
    failed = bool(report.errors) or (args.strict and bool(report.findings))
    if args.json:
        print(
            orjson.dumps(
                {"ok": not failed, "stats": report.stats, "findings": [f.to_json() for f in report.findings]}
            ).decode()
        )
        return 1 if failed else 0
    print(
        f"{report.stats['events']} events in {report.stats['streams']} streams; "
        f"{report.stats['referenced_blobs']} blobs referenced"
    )
    for f in report.findings:
        print(f"{f.severity.upper():8} {f.check}: {f.message}")
        for example in f.examples[:5]:
            print(f"           {example}")
    if not report.findings:
        print("OK: no problems found")
    return 1 if failed else 0
