"""Where a running ``chronos serve`` of this database listens, so ``chronos search`` can ask it.

A question asked from the command line would otherwise load the embedding model in a fresh process
each time (seconds); a running serve has it loaded. ``chronos serve`` writes ``CHRONOS_HOME/serve.json``
(its URL, process id and which database it serves) once its socket is bound and removes it when it
stops; ``find`` returns the URL only when that process is alive and serves the same database as the
caller's settings (the embedded server of the same home, or the same ``DATABASE_URL`` host, port and
database). Nothing secret is written: the file holds no token and no password.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from app.config import Settings

FILE = "serve.json"


def database_of(settings: Settings) -> str:
    """Which database ``settings`` point at, without credentials (a hash: the file is readable)."""
    if settings.database_url:
        u = urlsplit(settings.database_url)
        where = f"{u.hostname or ''}:{u.port or 5432}{u.path or ''}?{u.query}"
    else:
        where = f"embedded:{settings.pgdata.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()


@contextlib.contextmanager
def announce(settings: Settings, url: str) -> Iterator[None]:
    """Say that this process serves ``url`` for the settings' database until the block ends."""
    path = settings.home / FILE
    body = orjson.dumps({"url": url, "pid": os.getpid(), "database": database_of(settings)})
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
    except OSError:
        yield  # a read-only home: searches load the model themselves
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if orjson.loads(path.read_bytes()).get("pid") == os.getpid():  # not a newer serve's file
                path.unlink()


def find(settings: Settings) -> str | None:
    """The URL of a live ``chronos serve`` of the same database, else None."""
    try:
        found = orjson.loads(Path(settings.home / FILE).read_bytes())
        url, pid, database = str(found["url"]), int(found["pid"]), str(found["database"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if database != database_of(settings) or not _alive(pid):
        return None
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True
