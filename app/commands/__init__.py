"""Subcommand modules of ``chronos``; each has ``register(subparsers)``. Add new ones here."""

COMMAND_MODULES: list[str] = [
    "db",
    "migrate",
    "events",
    "bench",
    "ingest",
    "worker",
    "check",
    "search",
    "replay",
    "delete",
    "costs",
    "reprocess",
    "batches",
    "serve",
    "tokens",
    "sync",
    "history",
    "documents",
    "collections",
    "sample",
]
