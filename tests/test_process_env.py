"""Processes that need none of the service's secrets do not get them (issue 11, item 8): the embedded
PostgreSQL (postmaster and backends) and the local Docling converter processes, which parse untrusted
files. Each is started with fake secrets in the environment; their ``/proc/<pid>/environ`` is read."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import psutil
import pytest

from app.db import start_embedded, stop_embedded
from app.process_env import converter_env, looks_secret, postgres_env

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "OPENAI_API_KEY": "sk-fake-openai-4b1d",
    "CHRONOS_API_TOKENS": "fake-api-token-one,fake-api-token-two",
    "DIRECTUS_TOKEN": "fake-directus-token-77",
    "DIRECTUS_URL": "http://admin:fake-directus-password@127.0.0.1:8055",
    "MODAL_TOKEN_ID": "ak-fake-modal-id",
    "MODAL_TOKEN_SECRET": "as-fake-modal-secret",
    "DATABASE_URL": "postgresql://svc:fake-db-password@db.example/chronos",
    "HF_TOKEN": "hf_fake_token_9",
    "DOCLING_SERVE_API_KEY": "fake-docling-key",
}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def leaked(pid: int) -> list[str]:
    """Names of the fake secrets found in a process's environment block, by name or by value."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return sorted(name for name, value in SECRETS.items() if name.encode() + b"=" in raw or value.encode() in raw)


def test_allow_lists_keep_what_children_need_and_drop_credentials() -> None:
    env = {
        **SECRETS,
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/t",
        "HF_HUB_OFFLINE": "1",
        "DOCLING_ARTIFACTS_PATH": "/models",
        "OMP_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": "/src",
        "CHRONOS_CONVERT_TIMEOUT": "300",
        "AWS_SECRET_ACCESS_KEY": "x",
        "PGPASSWORD": "x",
        "SOMETHING_ELSE": "x",
    }
    assert converter_env(env) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/t",
        "HF_HUB_OFFLINE": "1",
        "DOCLING_ARTIFACTS_PATH": "/models",
        "OMP_NUM_THREADS": "2",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": "/src",
    }
    assert postgres_env(env) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/t",
    }
    assert all(looks_secret(name) for name in SECRETS if name != "CHRONOS_API_TOKENS") and looks_secret("api_key")
    assert not any(looks_secret(n) for n in ("TOKENIZERS_PARALLELISM", "GIT_AUTHOR_NAME", "KEYBOARD", "PATH"))


async def test_embedded_server_gets_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    pgdata = tmp_path / "home" / "pgdata"
    admin = await asyncio.to_thread(start_embedded, pgdata)
    try:
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        conn = await asyncpg.connect(admin)
        try:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            processes = [postmaster, *postmaster.children(recursive=True)]  # this session's backend included
            found = {p.pid: leaked(p.pid) for p in processes}
            # The attack from issue 11: the server's environment read through SQL.
            server_env = await conn.fetchval(
                "SELECT pg_read_binary_file('/proc/' || $1::text || '/environ')", str(postmaster.pid)
            )
        finally:
            await conn.close()
        assert backend in found and len(found) >= 3, found
        assert "PATH" in environ_of(postmaster.pid)  # the block was read, and it is the minimal one
        assert found == {pid: [] for pid in found}
        assert b"PATH=" in server_env and not any(v.encode() in server_env for v in SECRETS.values())
    finally:
        await asyncio.to_thread(stop_embedded, pgdata)


@pytest.mark.local_models
def test_converter_processes_get_no_secrets() -> None:
    env = {**os.environ, **SECRETS}
    probe = subprocess.Popen(
        [sys.executable, "-m", "tests.secret_env_probe"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert probe.stdout is not None and probe.stdin is not None
        line = probe.stdout.readline()
        assert line, f"the probe failed: {probe.stderr.read().decode() if probe.stderr else ''}"
        report = orjson.loads(line)
        assert "Probe" in report["markdown"]  # a converter process really converted a document
        children = report["children"]
        assert len(children) >= 2, children  # the fork server and a converter process (and the resource tracker)
        assert leaked(report["pid"]) == sorted(SECRETS)  # the worker itself had every secret
        assert {pid: leaked(pid) for pid in children} == {pid: [] for pid in children}
        assert all("PATH" in environ_of(pid) for pid in children)
    finally:
        if probe.stdin is not None:
            probe.stdin.close()
        try:
            probe.wait(30)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
