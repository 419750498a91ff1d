"""``chronos serve`` as a process: listens, prints a run token when none is configured, answers
with that token, and exits cleanly on SIGTERM even with a live SSE stream open."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def test_serve_process(dsn: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHRONOS_API_TOKENS"}
    env.update(DATABASE_URL=dsn, CHRONOS_HOME=str(tmp_path / "home"), CHRONOS_SSE_HEARTBEAT_S="0.5")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = re.search(r"listening on (http://\S+)/", lines[0]).group(1)  # type: ignore[union-attr]
        token = re.search(r"token is (\S+)", lines[1]).group(1)  # type: ignore[union-attr]
        assert f"#token={token}" in lines[2]
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet: look again until the deadline
            assert time.monotonic() < deadline and proc.poll() is None, "serve did not come up"
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{url}/documents", content=b"# Served\n\ntext\n", headers={**auth, "X-Filename": "s.md"})
        assert r.status_code == 202, r.text
        assert httpx.post(f"{url}/documents", content=b"# x\n", headers={"X-Filename": "s.md"}).status_code == 401
        with httpx.stream("GET", f"{url}/events/stream", timeout=30) as stream:
            lines_iter = stream.iter_lines()
            assert next(line for line in lines_iter if line.startswith(":")) == ": heartbeat"
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
