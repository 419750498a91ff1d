"""POSTing an alert to the webhook: a plain JSON body with a Slack-compatible ``text`` field, retried
with exponential backoff (tenacity) on what a later try can fix."""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from app.errors import Unavailable

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


class WebhookError(Unavailable):
    """The webhook did not accept the alert."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = True,
                 retry_after_s: float | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status_code: int | None
    error: str | None = None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what is recorded and logged (a Slack webhook's path and a
    query string may be secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: the exponential backoff alone


async def _post_once(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> int:
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException as exc:
        raise WebhookError(f"timed out: {exc!r}") from exc
    except httpx.TransportError as exc:
        raise WebhookError(f"could not connect: {exc!r}") from exc
    if response.is_success:
        return response.status_code
    raise WebhookError(
        f"HTTP {response.status_code}: {response.text[:200]}", status_code=response.status_code,
        retryable=response.status_code in RETRY_STATUSES, retry_after_s=_retry_after(response),
    )  # fmt: skip


async def post_alert(
    url: str,
    body: dict[str, Any],
    *,
    attempts: int,
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    timeout_s: float = 10.0,
) -> Delivery:
    """POST ``body`` to ``url`` up to ``attempts`` times; never raises for the webhook's failures."""
    exponential = wait_exponential(multiplier=backoff_s, max=max_backoff_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = exc.retry_after_s if isinstance(exc, WebhookError) else None
        return min(max(exponential(state), after or 0.0), max_backoff_s)

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "budget alert webhook %s failed (attempt %d of %d): %s; retrying", origin(url), state.attempt_number,
            attempts, exc,
            extra={"action": "alert_webhook_retry", "webhook": origin(url), "attempt": state.attempt_number,
                   "error": str(exc)},
        )  # fmt: skip

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts), wait=wait, before_sleep=log_retry, reraise=True,
        retry=retry_if_exception(lambda e: isinstance(e, WebhookError) and e.retryable),
    )  # fmt: skip
    tried, status = 0, 0
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        try:
            async for attempt in retrying:
                with attempt:
                    tried = attempt.retry_state.attempt_number
                    status = await _post_once(client, url, body)
        except WebhookError as exc:
            return Delivery(False, tried, exc.status_code, str(exc))
    return Delivery(True, tried, status)
