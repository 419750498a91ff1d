"""Acceptance: the real ``chronos`` CLI in a subprocess, on the embedded server and on DATABASE_URL."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.cli_support import Cli, cli_env

_env = cli_env


@pytest_asyncio.fixture(loop_scope="session")
async def embedded(tmp_path: Path) -> AsyncIterator[Cli]:
    """The CLI with its own CHRONOS_HOME and no DATABASE_URL; the server is stopped afterwards."""
    cli = Cli(_env(CHRONOS_HOME=str(tmp_path / "home")))
    try:
        yield cli
    finally:
        await cli("db", "stop", ok=False)


async def test_embedded_server_lifecycle_and_persistence(embedded: Cli, tmp_path: Path) -> None:
    cli = embedded
    status = await cli.json("db", "status")
    assert status == {
        "database_url_set": False,
        "pgdata": str((tmp_path / "home" / "pgdata").resolve()),
        "initialised": False,
        "running": False,
        "pid": None,
    }
    assert "embedded PostgreSQL running" in (await cli("db", "start")).out
    status = await cli.json("db", "status")
    assert isinstance(status, dict) and status["running"] and status["initialised"]

    url = (await cli("db", "url")).out.strip()
    assert url.startswith("postgresql://")
    psql = shutil.which("psql")
    if psql is not None:  # the DSN is one that psql itself accepts
        proc = await asyncio.create_subprocess_exec(
            psql, url, "-XAtc", "select 40 + 2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "42"

    first = (await cli("migrate")).out
    assert first.startswith("applied: 001_events.sql, 002_blobs.sql")
    assert (await cli("migrate")).out.strip() == "database is up to date"

    assert "appended at position 1" in (await cli("events", "append", "doc-1", "Thing", '{"n": 1}')).out
    await cli("events", "append", "doc-1", "Thing", '{"n": 2}', "--expected-version", "1")
    conflict = await cli("events", "append", "doc-1", "Thing", '{"n": 3}', "--expected-version", "1", ok=False)
    assert conflict.code == 1
    assert "doc-1 is at version 2, expected 1" in conflict.err

    listed = await cli.json("events", "list")
    assert isinstance(listed, list)
    assert [(e["stream_id"], e["stream_version"], e["data"]) for e in listed] == [
        ("doc-1", 1, {"n": 1}),
        ("doc-1", 2, {"n": 2}),
    ]
    assert listed[0]["metadata"] == {"actor": "cli"}

    assert (await cli("db", "stop")).out.strip() == "stopped"
    status = await cli.json("db", "status")
    assert isinstance(status, dict) and not status["running"]
    assert (await cli("db", "stop")).out.strip() == "not running"

    # Any command starts the server again; the data survived the restart.
    again = await cli.json("events", "list", "--stream", "doc-1")
    assert again == listed
    status = await cli.json("db", "status")
    assert isinstance(status, dict) and status["running"]


async def test_database_url_is_used_as_given(dsn: str, tmp_path: Path) -> None:
    cli = Cli(_env(DATABASE_URL=dsn, CHRONOS_HOME=str(tmp_path / "unused")))
    assert (await cli("db", "url")).out.strip() == dsn
    assert "nothing to do" in (await cli("db", "start")).out
    assert (await cli("migrate")).out.strip() == "database is up to date"
    await cli("events", "append", "doc-9", "Thing", '{"ok": true}')
    listed = await cli.json("events", "list", "--stream", "doc-9")
    assert isinstance(listed, list) and [e["data"] for e in listed] == [{"ok": True}]
    status = await cli.json("db", "status")
    assert isinstance(status, dict) and status["database_url_set"] and not status["initialised"]
    assert not (tmp_path / "unused").exists()  # no embedded server was started


async def test_unreachable_database_url_fails_with_a_clear_message(tmp_path: Path) -> None:
    cli = Cli(_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", CHRONOS_HOME=str(tmp_path)))
    result = await cli("events", "list", ok=False, timeout=60)
    assert result.code == 69  # EX_UNAVAILABLE: every expected failure exits with its kind's code
    assert "could not use the database at postgresql://nobody@127.0.0.1:1/none" in result.err
    assert "Traceback" not in result.err


async def test_db_url_carries_the_service_password(embedded: Cli, tmp_path: Path) -> None:
    """`chronos db url` prints the DSN with the generated password; without it the server refuses."""
    url = (await embedded("db", "url")).out.strip()
    pgpass = tmp_path / "home" / "pgpass"
    assert oct(pgpass.stat().st_mode & 0o777) == "0o600"
    password = pgpass.read_text().strip().rsplit(":", 1)[1]
    assert f"postgres:{password}@" in url
    psql = shutil.which("psql")
    if psql is None:
        return
    env = {"PATH": os.environ.get("PATH", ""), "PGPASSFILE": os.devnull}
    for dsn, ok in ((url, True), (url.replace(f":{password}@", "@"), False), (url.replace(password, "x"), False)):
        proc = await asyncio.create_subprocess_exec(
            psql,
            dsn,
            "-w",
            "-XAtc",
            "select current_user",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert (proc.returncode == 0) is ok, (dsn, err.decode())
        if ok:
            assert out.decode().strip() == "postgres"
        else:
            assert "password" in err.decode()
