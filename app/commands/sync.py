"""``chronos sync directus [--dry-run] [--force] [--max-delete-share F] [--json]``: make Chronos match
Directus — files changed since the last sync are ingested or revised, files gone from Directus are
deleted (under the deletion guard). Directus never retries a failed Flow run; this (or the periodic
sync under ``chronos serve``, every ``CHRONOS_DIRECTUS_SYNC_S`` seconds) brings in what a webhook missed.
Folders sync with ``chronos ingest DIR --sync``."""

from __future__ import annotations

import argparse

import orjson

from app.runtime import open_runtime
from app.services import directus
from app.services.sync import MAX_DELETE_SHARE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sync", help="make Chronos match a source (Directus)")
    sources = p.add_subparsers(dest="source", required=True)
    d = sources.add_parser(
        "directus", help="ingest, revise and delete to match Directus (DIRECTUS_URL, DIRECTUS_TOKEN)"
    )
    d.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    d.add_argument("--force", action="store_true", help="delete even above the deletion guard's share")
    d.add_argument(
        "--max-delete-share",
        type=float,
        default=MAX_DELETE_SHARE,
        metavar="F",
        help=f"refuse to delete more than this share of Directus's documents (default {MAX_DELETE_SHARE})",
    )
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=sync_directus)


async def sync_directus(args: argparse.Namespace) -> int:
    async with open_runtime() as rt, directus.client_for(rt) as client:
        report = await directus.sync(
            rt, client, dry_run=args.dry_run, force=args.force, max_delete_share=args.max_delete_share, actor="cli"
        )
    if args.json:
        print(orjson.dumps(report.to_json()).decode())
        return 0
    plan = report.plan
    if args.dry_run and plan is not None:
        print(f"would upload {len(plan.new)} new and revise up to {len(plan.changed)} changed files, "
              f"delete {len(plan.vanished)} of {plan.live} documents ({plan.delete_share:.0%})")  # fmt: skip
        for key in sorted(plan.new):
            print(f"  new      {key}")
        for key in sorted(plan.changed):
            print(f"  changed  {key}")
        for key in sorted(plan.vanished):
            print(f"  delete   {key}")
        return 0
    print(
        f"synced Directus: {len(report.uploaded)} uploaded or revised, {report.unchanged} unchanged, "
        f"{len(report.deleted)} deleted, {len(report.rejected)} rejected (high-water {report.high_water or '-'})"
    )
    for file_id, why in sorted(report.rejected.items()):
        print(f"  rejected {file_id}: {why}")
    return 0
