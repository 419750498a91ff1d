"""``chronos``: the command line. Each subcommand lives in ``app/commands/<name>.py``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from app import malloc
from app.commands import COMMAND_MODULES
from events.errors import ChronosError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronos", description="Chronos Ingest: event-sourced document ingestion on PostgreSQL."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"app.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    malloc.tune()  # before the threads and the models (see app/malloc.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ChronosError as exc:  # every expected failure: its message says what to do
        print(f"chronos {args.command}: error: {exc}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return exc.exit_code
    except OSError as exc:  # the file system or the network, named by the OS
        print(f"chronos {args.command}: error: {exc}", file=sys.stderr)
        return 74  # EX_IOERR
    except Exception as exc:
        print(
            f"chronos {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(a bug: run again with -v for the traceback and report it)",
            file=sys.stderr,
        )
        if args.verbose:
            traceback.print_exc()
        return 70  # EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
