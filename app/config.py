"""Settings from the environment (names are a public contract: see ARCHITECTURE.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from events.errors import ChronosError


class ConfigError(ChronosError):
    """A setting in the environment is not valid."""

    code = "invalid_configuration"
    exit_code = 78  # EX_CONFIG


def _tokens(raw: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (raw or "").split(",") if t.strip())


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from exc
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _decimal(env: dict[str, str], name: str) -> Decimal | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ConfigError(f"{name}={raw!r} is not an amount in USD") from exc
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name}={raw!r} must be zero or more")
    return value


def _url(env: dict[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL (e.g. https://hooks.slack.com/services/...)")
    return raw


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    """``DATABASE_URL``: any PostgreSQL >= 15 with pgvector; unset means the embedded server."""
    home: Path = field(default_factory=lambda: Path(".chronos"))
    """``CHRONOS_HOME``: local state (the embedded database lives in ``home/pgdata``)."""
    api_tokens: tuple[str, ...] = ()
    """``CHRONOS_API_TOKENS``: bearer tokens accepted by the HTTP API (required for every write)."""
    api_read_auth: bool = False
    """``CHRONOS_API_READ_AUTH=1``: reads need a bearer token too (health checks stay open)."""
    max_upload_bytes: int = 256 * 1024 * 1024
    """``CHRONOS_MAX_UPLOAD_BYTES``: largest document the API accepts (413 above)."""
    max_body_bytes: int = 1024 * 1024
    """``CHRONOS_API_MAX_BODY_BYTES``: largest request body of any other API call (JSON, webhooks)."""
    max_header_bytes: int = 16 * 1024
    """``CHRONOS_API_MAX_HEADER_BYTES``: largest total size of a request's headers (431 above)."""
    sse_heartbeat_s: float = 15.0
    """``CHRONOS_SSE_HEARTBEAT_S``: idle seconds between heartbeat comments on ``/events/stream``."""
    directus_url: str | None = None
    """``DIRECTUS_URL``: base URL of the Directus instance whose files.upload webhooks we accept."""
    directus_token: str | None = None
    """``DIRECTUS_TOKEN``: static token used to fetch ``/assets/{id}`` from Directus."""
    embed_jobs: int = 4
    """``CHRONOS_EMBED_JOBS``: embed jobs one worker slot takes at once and runs side by side, so the
    embedder's threads are kept busy by several (often small) documents instead of one."""
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    modal_token_id: str | None = None
    modal_token_secret: str | None = None
    monthly_budget_usd: Decimal | None = None
    """``CHRONOS_MONTHLY_BUDGET_USD``: overrides the budget stored in the database (settings table)."""
    alert_webhook_url: str | None = None
    """``CHRONOS_ALERT_WEBHOOK_URL``: where budget alerts (80 % and 100 % of the monthly budget) are
    POSTed as JSON with a Slack-compatible ``text`` field (docs/costs.md). Unset: alerts are recorded
    and shown (``chronos costs``, the dashboard) but not sent."""
    alert_webhook_attempts: int = 5
    """``CHRONOS_ALERT_WEBHOOK_ATTEMPTS``: tries per delivery (exponential backoff between them)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        return cls(
            database_url=e.get("DATABASE_URL") or None,
            home=Path(e.get("CHRONOS_HOME") or ".chronos"),
            api_tokens=_tokens(e.get("CHRONOS_API_TOKENS")),
            api_read_auth=_flag(e.get("CHRONOS_API_READ_AUTH")),
            max_upload_bytes=_int(e, "CHRONOS_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_body_bytes=_int(e, "CHRONOS_API_MAX_BODY_BYTES", cls.max_body_bytes),
            max_header_bytes=_int(e, "CHRONOS_API_MAX_HEADER_BYTES", cls.max_header_bytes),
            sse_heartbeat_s=_float(e, "CHRONOS_SSE_HEARTBEAT_S", cls.sse_heartbeat_s),
            directus_url=(e.get("DIRECTUS_URL") or "").rstrip("/") or None,
            directus_token=e.get("DIRECTUS_TOKEN") or None,
            embed_jobs=_int(e, "CHRONOS_EMBED_JOBS", cls.embed_jobs),
            openai_api_key=e.get("OPENAI_API_KEY") or None,
            openai_base_url=e.get("OPENAI_BASE_URL") or None,
            modal_token_id=e.get("MODAL_TOKEN_ID") or None,
            modal_token_secret=e.get("MODAL_TOKEN_SECRET") or None,
            monthly_budget_usd=_decimal(e, "CHRONOS_MONTHLY_BUDGET_USD"),
            alert_webhook_url=_url(e, "CHRONOS_ALERT_WEBHOOK_URL"),
            alert_webhook_attempts=_int(e, "CHRONOS_ALERT_WEBHOOK_ATTEMPTS", cls.alert_webhook_attempts),
        )

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"
