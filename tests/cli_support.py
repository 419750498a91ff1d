"""Acceptance helpers: the real ``chronos`` CLI in a subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("chronos")
CHRONOS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "app.cli"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def __call__(self, *args: str, ok: bool = True, timeout: float = 120) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *CHRONOS, *args, cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        result = Result(proc.returncode or 0, out.decode(), err.decode())
        if ok:
            assert result.code == 0, f"chronos {' '.join(args)} failed ({result.code}): {result.err}{result.out}"
        return result

    async def json(self, *args: str) -> object:
        return orjson.loads((await self(*args, "--json")).out)


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without its database settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHRONOS_HOME")}
    env.update(extra)
    return env
