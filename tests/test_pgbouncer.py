"""Behind a real PgBouncer (issue 11, item 12). In transaction mode one client's transactions run in
different server sessions, which breaks LISTEN, session advisory locks and prepared statements: the
start-up refuses such a DATABASE_URL and says why. In session mode everything works, which needs
our own settings to be set after connecting (PgBouncer refuses unknown startup parameters)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.config import Settings
from app.db import DatabaseUnavailable, open_pool, with_database
from events import EventStore, NewEvent
from events.connection import transaction_pooled

ROOT = Path(__file__).resolve().parent.parent
PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
)
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pgbouncer(server_dsn: str, mode: str) -> Iterator[str]:
    """A PgBouncer in ``mode`` in front of the tests' server; yields its DSN (database of server_dsn)."""
    assert PGBOUNCER is not None
    # Its own directory under the temp root: pytest's tmp_path sits below a folder only root may enter.
    workdir = Path(tempfile.mkdtemp(prefix="chronos-pgbouncer-"))
    try:
        yield from _run_pgbouncer(server_dsn, mode, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_pgbouncer(server_dsn: str, mode: str, workdir: Path) -> Iterator[str]:
    assert PGBOUNCER is not None
    parts = urlsplit(server_dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = query.get("port", [str(parts.port or 5432)])[0]
    user = parts.username or "postgres"
    password = f" password={parts.password}" if parts.password else ""
    listen = _free_port()
    workdir.chmod(0o755)
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={host} port={port} user={user}{password}\n\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\npool_mode = {mode}\n"
        f"default_pool_size = 4\nlogfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    run_as: str | None = None
    if os.geteuid() == 0:  # PgBouncer refuses to run as root; the embedded server's user reaches its socket
        run_as = "pgserver"
        entry = pwd.getpwnam(run_as)
        for path in [workdir, *workdir.iterdir()]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    proc = subprocess.Popen(
        [PGBOUNCER, str(workdir / "pgbouncer.ini")], user=run_as, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until it listens (readiness, not a timing assertion)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "pgbouncer.log").read_text() if (workdir / "pgbouncer.log").exists() else ""
                raise RuntimeError(f"pgbouncer did not start: {proc.stderr.read() if proc.stderr else b''!r} {log}")
            time.sleep(0.05)
        yield with_database(f"postgresql://{user}@127.0.0.1:{listen}/postgres", urlsplit(server_dsn).path[1:])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_transaction_mode_is_refused_at_start_up(dsn: str) -> None:
    with pgbouncer(dsn, "transaction") as url:
        assert await transaction_pooled(url)
        with pytest.raises(DatabaseUnavailable, match="pooler in transaction mode") as info:
            await open_pool(Settings(database_url=url))
        assert "session mode" in str(info.value) and "127.0.0.1" in str(info.value)
        # The CLI says the same, without a traceback.
        env = {k: v for k, v in os.environ.items() if k != "CHRONOS_HOME"} | {"DATABASE_URL": url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.cli",
            "events",
            "list",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 69  # DatabaseUnavailable: EX_UNAVAILABLE
        assert "pooler in transaction mode" in err.decode() and "Traceback" not in err.decode()


async def test_session_mode_works(dsn: str) -> None:
    assert not await transaction_pooled(dsn)  # direct
    with pgbouncer(dsn, "session") as url:
        assert not await transaction_pooled(url)
        _, pool = await open_pool(Settings(database_url=url), max_size=3)
        try:
            store = EventStore(pool)
            await store.append("through-bouncer", [NewEvent("Thing", {"n": 1}), NewEvent("Thing", {"n": 2})])
            await store.notifier.flush()
            events = await store.read_stream("through-bouncer")
            assert [e.data["n"] for e in events] == [1, 2]
            # Our session setting reached the server (set after connecting, not in the startup packet).
            assert await pool.fetchval("SELECT current_setting('chronos.app_notifier', true)") == "on"
        finally:
            await pool.close()
