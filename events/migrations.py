"""Ordered SQL migrations from ``sql/NNN_name.sql``, recorded with checksums.

* Re-running is a no-op.
* A file already applied whose text changed is refused, naming the file: shipped migrations are
  frozen; changes go into a new file.
* Concurrent start-ups take turns on an advisory lock.
* ``sql/views/*.sql`` hold idempotent definitions (CREATE OR REPLACE views and functions for
  analysts); they are re-applied after the migrations whenever their text changed, and so is every
  view file after a re-applied one (a ``DROP VIEW … CASCADE`` drops what later files built on the
  view: grants, security_invoker, dependent views).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from events.errors import MigrationError
from events.sqlfiles import sql_dir

logger = logging.getLogger(__name__)

LOCK_KEY = 0x6368726F6E6F73  # "chronos"
_NUMBERED = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    filename   text PRIMARY KEY,
    checksum   text NOT NULL,
    kind       text NOT NULL DEFAULT 'migration',
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    filename: str
    text: str
    kind: str  # 'migration' (frozen) or 'view' (idempotent, re-applied when changed)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def discover(root: Path | None = None) -> list[Migration]:
    base = root or sql_dir()
    found: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(base.glob("*.sql")):
        match = _NUMBERED.match(path.name)
        if not match:
            raise MigrationError(f"sql/{path.name}: migration files are named NNN_lowercase_name.sql")
        number = match.group(1)
        if number in numbers:
            raise MigrationError(f"sql/{path.name} and sql/{numbers[number]} share number {number}")
        numbers[number] = path.name
        found.append(Migration(path.name, path.read_text(encoding="utf-8"), "migration"))
    views = base / "views"
    if views.is_dir():
        for path in sorted(views.glob("*.sql")):
            found.append(Migration(f"views/{path.name}", path.read_text(encoding="utf-8"), "view"))
    return found


async def migrate(conn: asyncpg.Connection, root: Path | None = None) -> list[str]:
    """Apply what is missing; returns the names applied (empty when already up to date)."""
    migrations = discover(root)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        done = {
            r["filename"]: r["checksum"] for r in await conn.fetch("SELECT filename, checksum FROM schema_migrations")
        }
        views_changed = False
        for m in migrations:
            known = done.get(m.filename)
            if known == m.checksum and not (views_changed and m.kind == "view"):
                continue
            views_changed = views_changed or m.kind == "view"
            if known is not None and m.kind == "migration":
                raise MigrationError(
                    f"sql/{m.filename} was edited after it was applied (checksum {known[:12]}… is now "
                    f"{m.checksum[:12]}…). Applied migrations are frozen: restore the file and put the "
                    "change in a new numbered migration."
                )
            async with conn.transaction():
                try:
                    await conn.execute(m.text)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"sql/{m.filename} failed: {exc}") from exc
                await conn.execute(
                    """INSERT INTO schema_migrations (filename, checksum, kind) VALUES ($1, $2, $3)
                       ON CONFLICT (filename) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()""",
                    m.filename,
                    m.checksum,
                    m.kind,
                )
            logger.info("applied %s", m.filename, extra={"action": "migrate", "migration": m.filename})
            applied.append(m.filename)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied
