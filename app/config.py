"""The settings tree: every setting of Chronos, read from the environment here and nowhere else
(docs/architecture.md). ``Settings.from_env()`` builds it; the ``Runtime`` carries it; code that runs
without a runtime (converter child processes, the embedder's thread pool) asks :func:`current`.

The one exception is the Modal container (``app/modal_app.py``, ``app/convert/container.py``): it runs
where this package may not be installed and reads the environment Modal gives it."""

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


def _opt_float(env: dict[str, str], name: str) -> float | None:
    raw = (env.get(name) or "").strip()
    return _float(env, name, 0.0) if raw else None


def _opt_int(env: dict[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    return _int(env, name, 0) if raw else None


PRICE_PREFIX = "CHRONOS_PRICE_"


@dataclass(frozen=True)
class ConvertSettings:
    timeout_s: float | None = None
    """``CHRONOS_CONVERT_TIMEOUT``: seconds one local conversion may take (default in ConvertOptions)."""
    memory_mb: int | None = None
    """``CHRONOS_CONVERT_MEMORY_MB``: resident memory cap of a converter process."""
    budget_s: float | None = None
    """``CHRONOS_CONVERT_BUDGET``: converter seconds one document may use across all recovery attempts
    (default: twice the per-document limit; docs/convert.md)."""
    processes: int | None = None
    """``CHRONOS_CONVERT_PROCESSES``: converter processes a worker keeps (default: by cores and memory)."""
    startup_timeout_s: float = 300.0
    """``CHRONOS_CONVERT_STARTUP_TIMEOUT``: seconds a converter process may take to load Docling."""
    slow_s: float = 20.0
    """``CHRONOS_CONVERT_SLOW_S``: a conversion running longer is *slow*: while every converter process
    is busy with a slow one, the pool starts an extra process for the next document."""
    burst: int = 1
    """``CHRONOS_CONVERT_BURST``: extra converter processes allowed while all are slow (0: none)."""
    artifacts_path: str | None = None
    """``DOCLING_ARTIFACTS_PATH``: where Docling's layout/OCR models are (the standard PDF pipeline)."""

    @classmethod
    def from_env(cls, e: dict[str, str]) -> ConvertSettings:
        return cls(
            timeout_s=_opt_float(e, "CHRONOS_CONVERT_TIMEOUT"),
            memory_mb=_opt_int(e, "CHRONOS_CONVERT_MEMORY_MB"),
            budget_s=_opt_float(e, "CHRONOS_CONVERT_BUDGET"),
            processes=_opt_int(e, "CHRONOS_CONVERT_PROCESSES"),
            startup_timeout_s=_float(e, "CHRONOS_CONVERT_STARTUP_TIMEOUT", cls.startup_timeout_s),
            slow_s=_float(e, "CHRONOS_CONVERT_SLOW_S", cls.slow_s),
            burst=int(e.get("CHRONOS_CONVERT_BURST") or cls.burst),
            artifacts_path=e.get("DOCLING_ARTIFACTS_PATH") or None,
        )


@dataclass(frozen=True)
class ModalSettings:
    token_id: str | None = None
    """``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET``: with both set, ``auto`` converts PDFs on Modal."""
    token_secret: str | None = None
    gpu: str | None = None
    """``CHRONOS_MODAL_GPU``: the GPU deployed (else what the deployed containers last reported, else A10G)."""
    timeout_s: float | None = None
    """``CHRONOS_MODAL_TIMEOUT``: seconds one Modal call (a whole batch) may take."""
    batch: int = 8
    """``CHRONOS_MODAL_BATCH``: documents one Modal call converts at most."""
    batch_mb: float = 64.0
    """``CHRONOS_MODAL_BATCH_MB``: megabytes of documents one Modal call carries at most."""
    wait_ms: float = 500.0
    """``CHRONOS_MODAL_WAIT_MS``: how long a batch waits for more documents before it is sent."""
    retry_after_s: float = 300.0
    """``CHRONOS_MODAL_RETRY_AFTER``: seconds the breaker keeps Modal closed after it failed."""
    cpu: float | None = None
    """``CHRONOS_MODAL_CPU`` / ``CHRONOS_MODAL_MEMORY_MB``: the deployment's reservations, for pricing."""
    memory_mb: float | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token_id and self.token_secret)

    @classmethod
    def from_env(cls, e: dict[str, str]) -> ModalSettings:
        return cls(
            token_id=e.get("MODAL_TOKEN_ID") or None,
            token_secret=e.get("MODAL_TOKEN_SECRET") or None,
            gpu=(e.get("CHRONOS_MODAL_GPU") or "").upper() or None,
            timeout_s=_opt_float(e, "CHRONOS_MODAL_TIMEOUT"),
            batch=_int(e, "CHRONOS_MODAL_BATCH", cls.batch),
            batch_mb=_float(e, "CHRONOS_MODAL_BATCH_MB", cls.batch_mb),
            wait_ms=_float(e, "CHRONOS_MODAL_WAIT_MS", cls.wait_ms),
            retry_after_s=_float(e, "CHRONOS_MODAL_RETRY_AFTER", cls.retry_after_s),
            cpu=_opt_float(e, "CHRONOS_MODAL_CPU"),
            memory_mb=_opt_float(e, "CHRONOS_MODAL_MEMORY_MB"),
        )


def _prices(e: dict[str, str]) -> tuple[tuple[str, float], ...]:
    out = []
    for name, raw in sorted(e.items()):
        if name.startswith(PRICE_PREFIX):
            try:
                out.append((name, float(raw)))
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a number (USD per unit)") from exc
    return tuple(out)


@dataclass(frozen=True)
class LaneSettings:
    """Priority lanes of the stage work queue (app/pipeline/lanes.py, docs/benchmarks.md)."""

    enabled: bool = True
    """``CHRONOS_LANES=off``: workers claim jobs oldest first whatever their lane (lanes are still
    recorded and shown); the same-run baseline of ``chronos bench freshness``."""
    interactive_max_bytes: int = 5 * 1024 * 1024
    """``CHRONOS_INTERACTIVE_MAX_BYTES``: largest upload that may go into the interactive lane."""
    interactive_depth: int = 8
    """``CHRONOS_INTERACTIVE_DEPTH``: uploads waiting for conversion in the interactive lane; an upload
    arriving while it is this deep goes to the batch lane (a loop of single uploads is a batch too)."""
    batch_share: int = 4
    """``CHRONOS_BATCH_SHARE``: one claim in this many prefers the batch lane, so a batch keeps moving
    under a stream of interactive uploads (at least 1/N of the claims)."""

    @classmethod
    def from_env(cls, e: dict[str, str]) -> LaneSettings:
        raw = (e.get("CHRONOS_LANES") or "on").strip().lower()
        if raw not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"CHRONOS_LANES={raw!r}: use on or off")
        return cls(
            enabled=raw in ("on", "1", "true", "yes"),
            interactive_max_bytes=_int(e, "CHRONOS_INTERACTIVE_MAX_BYTES", cls.interactive_max_bytes),
            interactive_depth=_int(e, "CHRONOS_INTERACTIVE_DEPTH", cls.interactive_depth),
            batch_share=_int(e, "CHRONOS_BATCH_SHARE", cls.batch_share),
        )


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
    """``DIRECTUS_TOKEN``: static token used to read ``/files`` and ``/assets/{id}`` from Directus."""
    directus_sync_s: float = 300.0
    """``CHRONOS_DIRECTUS_SYNC_S``: seconds between the periodic Directus syncs under ``chronos serve``
    (when Directus is configured); ``off`` turns it off."""
    directus_collection_field: str | None = None
    """``CHRONOS_DIRECTUS_COLLECTION_FIELD``: a directus_files field naming each file's collection
    (unset: the name of the file's folder; docs/collections.md)."""
    directus_default_collection: str = "default"
    """``CHRONOS_DIRECTUS_DEFAULT_COLLECTION``: the collection of a Directus file whose folder (or field)
    names no existing collection."""
    embed_jobs: int = 4
    """``CHRONOS_EMBED_JOBS``: embed jobs one worker slot takes at once and runs side by side, so the
    embedder's threads are kept busy by several (often small) documents instead of one."""
    index_build_memory_mb: int | None = None
    """``CHRONOS_INDEX_BUILD_MEMORY_MB``: the most ``maintenance_work_mem`` an HNSW build after a bulk
    load (``chronos replay``) asks PostgreSQL for; it asks for what the graph needs (about 2.5x the raw
    vectors), at least 1 GB, at most this (default: half of this machine's RAM, which is the server's
    for the embedded PostgreSQL; set it to what a managed server can give one session).
    A graph larger than the setting still builds, many times slower."""
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    monthly_budget_usd: Decimal | None = None
    """``CHRONOS_MONTHLY_BUDGET_USD``: overrides the budget stored in the database (settings table)."""
    embed_threads: int | None = None
    """``CHRONOS_EMBED_THREADS``: parallel encode threads of the local embedder (default: usable cores)."""
    convert: ConvertSettings = field(default_factory=ConvertSettings)
    modal: ModalSettings = field(default_factory=ModalSettings)
    lanes: LaneSettings = field(default_factory=LaneSettings)
    price_overrides: tuple[tuple[str, float], ...] = ()
    """``CHRONOS_PRICE_<NAME>``: unit prices in USD that replace app/costs.py's defaults."""
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
            directus_sync_s=0.0
            if (e.get("CHRONOS_DIRECTUS_SYNC_S") or "").strip().lower() in ("off", "0")
            else _float(e, "CHRONOS_DIRECTUS_SYNC_S", cls.directus_sync_s),
            directus_collection_field=(e.get("CHRONOS_DIRECTUS_COLLECTION_FIELD") or "").strip() or None,
            directus_default_collection=(e.get("CHRONOS_DIRECTUS_DEFAULT_COLLECTION") or "").strip() or "default",
            embed_jobs=_int(e, "CHRONOS_EMBED_JOBS", cls.embed_jobs),
            index_build_memory_mb=_opt_int(e, "CHRONOS_INDEX_BUILD_MEMORY_MB"),
            openai_api_key=e.get("OPENAI_API_KEY") or None,
            openai_base_url=e.get("OPENAI_BASE_URL") or None,
            monthly_budget_usd=_decimal(e, "CHRONOS_MONTHLY_BUDGET_USD"),
            embed_threads=_opt_int(e, "CHRONOS_EMBED_THREADS"),
            convert=ConvertSettings.from_env(e),
            modal=ModalSettings.from_env(e),
            lanes=LaneSettings.from_env(e),
            price_overrides=_prices(e),
            alert_webhook_url=_url(e, "CHRONOS_ALERT_WEBHOOK_URL"),
            alert_webhook_attempts=_int(e, "CHRONOS_ALERT_WEBHOOK_ATTEMPTS", cls.alert_webhook_attempts),
        )

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"


_current: Settings | None = None

ENV_PREFIXES = ("CHRONOS_", "DATABASE_URL", "MODAL_", "OPENAI_", "DIRECTUS_", "DOCLING_")
"""Every variable :meth:`Settings.from_env` reads starts with one of these."""

_from_env: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def _env_key() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)))


def current() -> Settings:
    """The process's settings, for code that runs without a runtime at hand (converter pools, the Modal
    client, the price list, the embedder's threads): the ones :func:`use` set, else the environment's as
    it is now (a setting changed for a test or a process is seen at the next call). The environment's
    are parsed once per distinct set of the variables they read, not at every call: the worker asks
    many times per job (bench pipeline profiles showed 3 % of its CPU rebuilding them)."""
    global _from_env
    if _current is not None:
        return _current
    key = _env_key()
    cached = _from_env
    if cached is not None and cached[0] == key:
        return cached[1]
    settings = Settings.from_env()
    _from_env = (key, settings)
    return settings


def use(settings: Settings | None) -> Settings | None:
    """Make ``settings`` the process's (None: back to the environment); returns the previous ones."""
    global _current
    previous, _current = _current, settings
    return previous
