"""``chronos search`` asks a running ``chronos serve`` of the same database (its model is loaded) instead
of loading the embedding model itself; without one, or with one of another database, it searches itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from app.config import Settings
from app.services import running_serve
from tests.api_support import AUTH, server_process

pytestmark = pytest.mark.local_models

ROOT = Path(__file__).resolve().parent.parent
DOCS = {
    "founding.md": b"# Company history\n\nIBM was founded in 1911 as the Computing-Tabulating-Recording Company.\n",
    "orchids.md": b"# Orchid survey\n\nOrchids of the northern valleys bloom late in the summer.\n",
}
# Runs the CLI in a fresh interpreter and says whether it loaded the embedding model's libraries.
PROBE = (
    "import sys, time; from app import cli; t = time.perf_counter(); rc = cli.main(sys.argv[1:]); "
    "print(f'##{rc} {\"torch\" in sys.modules} {time.perf_counter() - t:.2f}', file=sys.stderr)"
)


def environment(dsn: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHRONOS_API_TOKENS", "CHRONOS_API_READ_AUTH")}
    env.update(DATABASE_URL=dsn, CHRONOS_HOME=str(home))
    return env


@pytest.fixture
def served(dsn: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A ``chronos serve --with-workers 1`` with the two documents searchable: (url, environment)."""
    env = environment(dsn, tmp_path / "home")
    with server_process(dsn, ("--with-workers", "1"), CHRONOS_HOME=env["CHRONOS_HOME"]) as url:
        ids = []
        for name, body in DOCS.items():
            r = httpx.post(f"{url}/documents", content=body, headers={**AUTH, "X-Filename": name}, timeout=30)
            assert r.status_code == 202, r.text
            ids.append(r.json()["document_id"])
        deadline = time.monotonic() + 300
        while not all(httpx.get(f"{url}/documents/{d}", timeout=30).json()["status"] == "searchable" for d in ids):
            assert time.monotonic() < deadline, "documents did not become searchable"
            time.sleep(0.3)
        yield url, env


def cli(env: dict[str, str], *argv: str) -> tuple[int, str, bool, float]:
    """(exit code, stdout, whether the process loaded torch, seconds inside cli.main)."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    found = re.search(r"##(\d+) (True|False) ([\d.]+)", done.stderr)
    assert found, done.stderr
    return int(found.group(1)), done.stdout, found.group(2) == "True", float(found.group(3))


def test_search_asks_the_running_serve_and_answers_alike(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    home = Path(env["CHRONOS_HOME"])
    assert json.loads((home / running_serve.FILE).read_text())["url"] == url + "/"
    question = ["search", "In which year was IBM founded?", "-k", "2", "--json"]
    code, out, loaded, remote_s = cli(env, *question)
    assert code == 0 and not loaded  # answered by the serve: no model in this process
    code, local_out, loaded, local_s = cli(env, *question, "--local")
    assert code == 0 and loaded  # searched here: the model was loaded
    remote, local = json.loads(out), json.loads(local_out)
    assert [h["chunk_id"] for h in remote] == [h["chunk_id"] for h in local]
    assert "1911" in remote[0]["text"] and remote[0]["filename"] == "founding.md"
    assert remote[0].keys() == local[0].keys()
    print(f"chronos search: {remote_s:.2f} s through the serve, {local_s:.2f} s loading the model itself")

    # Filters travel with the question; a filter the serve refuses is the caller's error (exit 2).
    code, out, loaded, _ = cli(env, "search", "summer flowers", "--filename", "orchids.*", "--json")
    assert code == 0 and not loaded and {h["filename"] for h in json.loads(out)} == {"orchids.md"}
    code, _, loaded, _ = cli(env, "search", "anything", "--document", "not-a-uuid")
    assert code == 2 and not loaded
    assert cli(env, "search", "anything", "--document", "not-a-uuid", "--local")[0] == 2


def test_another_database_or_a_dead_serve_is_not_asked(tmp_path: Path, dsn: str) -> None:
    home = tmp_path / "home"
    mine = Settings(database_url=dsn, home=home)
    with running_serve.announce(mine, "http://127.0.0.1:9/"):
        assert running_serve.find(mine) == "http://127.0.0.1:9/"
        other = Settings(database_url=urlunsplit(urlsplit(dsn)._replace(path="/otherdb")), home=home)
        assert running_serve.find(other) is None  # a serve of another database
        embedded = Settings(home=home)
        assert running_serve.find(embedded) is None
    assert not (home / running_serve.FILE).exists()  # removed when the serve stops
    stale = {"url": "http://127.0.0.1:9/", "pid": 2**22 + 12345, "database": running_serve.database_of(mine)}
    (home / running_serve.FILE).write_text(json.dumps(stale))  # a serve that was killed
    assert running_serve.find(mine) is None
    # The password is not part of which database it is.
    u = urlsplit(dsn)
    netloc = f"someone:secret@{u.hostname or ''}" + (f":{u.port}" if u.port else "")
    assert running_serve.database_of(mine) == running_serve.database_of(
        Settings(database_url=urlunsplit(u._replace(netloc=netloc)), home=home)
    )
