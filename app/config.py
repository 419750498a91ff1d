"""Settings from the environment (names are a public contract: see ARCHITECTURE.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _tokens(raw: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (raw or "").split(",") if t.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    """``DATABASE_URL``: any PostgreSQL >= 15 with pgvector; unset means the embedded server."""
    home: Path = field(default_factory=lambda: Path(".chronos"))
    """``CHRONOS_HOME``: local state (the embedded database lives in ``home/pgdata``)."""
    api_tokens: tuple[str, ...] = ()
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    modal_token_id: str | None = None
    modal_token_secret: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        return cls(
            database_url=e.get("DATABASE_URL") or None,
            home=Path(e.get("CHRONOS_HOME") or ".chronos"),
            api_tokens=_tokens(e.get("CHRONOS_API_TOKENS")),
            openai_api_key=e.get("OPENAI_API_KEY") or None,
            openai_base_url=e.get("OPENAI_BASE_URL") or None,
            modal_token_id=e.get("MODAL_TOKEN_ID") or None,
            modal_token_secret=e.get("MODAL_TOKEN_SECRET") or None,
        )

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"
