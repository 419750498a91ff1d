"""Calling the deployed Modal converter: look it up, ``spawn`` one call per batch, wait for it with a
timeout, and **cancel** it when the timeout passes (a call the client merely stops waiting for keeps
running, and billing, on Modal until the function's own timeout).

The deployed class is ``chronos-docling/Converter`` (``app/modal_app.py``). ``call_modal`` converts a
batch and returns one result per item, each with the Modal container time it is billed for
(``ModalUsage``); a call that fails as a whole raises ``ModalUnavailable`` (the caller converts
locally). Nothing here writes events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import config
from app.convert.errors import ConversionFailure
from app.convert.options import ConversionOutput, ModalUsage
from app.errors import Unavailable

log = logging.getLogger(__name__)

APP_NAME = "chronos-docling"
CLASS_NAME = "Converter"
METHOD_NAME = "convert"
"""After Modal was unreachable or refused our token, go straight to local for this long."""
MODAL_CONNECT_TIMEOUT_S = 20.0
"""How long looking the class up (hydrating it) may take. The Modal client retries a refused or
silent server on its own, so without this an outage would look like a timeout of the whole call
(``modal_timeout_s``, 10 minutes by default) and never trip the breaker."""
CANCEL_TIMEOUT_S = 30.0
DEADLINE_MARGIN_S = 5.0  # the deadline sent to the container is this much before the client's timeout
NOT_STARTED_ROUNDS = 3  # documents a call had no time for are sent again, at most this many times

Result = ConversionOutput | ConversionFailure


class ModalUnavailable(Unavailable):
    """The Modal call failed as a whole; ``reason`` is one of unreachable|unauthenticated|timeout|error.

    ``usage``: container time each document of a cancelled call is billed for (an upper bound: the
    time from spawn to cancel), so the documents' cost lines include it."""

    def __init__(self, reason: str, message: str, usage: ModalUsage | None = None) -> None:
        super().__init__(message)  # .message is the root's: the message as given
        self.reason = reason
        self.usage = usage

    def fallback(self) -> dict[str, str]:
        return {"from_backend": "modal", "reason": self.reason, "message": self.message}


class _Breaker:
    """Remembers a Modal outage so every document does not wait for the same connection error."""

    def __init__(self) -> None:
        self.until = 0.0
        self.error: ModalUnavailable | None = None

    def check(self) -> None:
        if self.error is not None and time.monotonic() < self.until:
            left = self.until - time.monotonic()
            raise ModalUnavailable(self.error.reason, f"{self.error.message} (not retried for another {left:.0f} s)")

    def trip(self, error: ModalUnavailable) -> None:
        if error.reason in ("unreachable", "unauthenticated"):
            self.error, self.until = error, time.monotonic() + config.current().modal.retry_after_s

    def reset(self) -> None:
        self.error, self.until = None, 0.0


modal_breaker = _Breaker()


@dataclass(frozen=True)
class ModalItem:
    """One document of a call."""

    path: Path
    filename: str
    media_type: str
    pipeline: str
    page_range: tuple[int, int] | None = None

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def payload(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "media_type": self.media_type,
            "data": self.path.read_bytes(),
            "pipeline": self.pipeline,
            "page_range": list(self.page_range) if self.page_range else None,
        }


def _lookup_class() -> Any:
    """The deployed class, by name (``modal deploy app/modal_app.py`` creates it)."""
    import modal

    return modal.Cls.from_name(APP_NAME, CLASS_NAME)


async def _connect(deployed: Any, timeout_s: float) -> None:
    """Hydrate the deployed class within ``timeout_s``; a server that cannot be reached in that time
    is "unreachable" (the breaker then sends conversions straight to local for a while)."""
    hydrate = getattr(deployed, "hydrate", None)
    if hydrate is None or not hasattr(hydrate, "aio"):
        return  # a stand-in without a lookup step
    try:
        await asyncio.wait_for(hydrate.aio(), timeout=timeout_s)
    except TimeoutError as exc:
        raise ModalUnavailable(
            "unreachable", f"could not reach Modal within {timeout_s:g} s (looking up {APP_NAME}.{CLASS_NAME})"
        ) from exc


def classify_modal_error(exc: BaseException) -> ModalUnavailable:
    import modal.exception as mex

    detail = f"{type(exc).__name__}: {str(exc)[:300]}"
    if isinstance(exc, mex.AuthError | mex.PermissionDeniedError):
        return ModalUnavailable(
            "unauthenticated", f"Modal rejected the credentials ({detail}); check MODAL_TOKEN_ID/MODAL_TOKEN_SECRET"
        )
    if isinstance(exc, mex.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return ModalUnavailable("timeout", f"the Modal call timed out ({detail})")
    if isinstance(exc, mex.ConnectionError | ConnectionError | OSError):
        return ModalUnavailable("unreachable", f"could not reach Modal ({detail})")
    if isinstance(exc, mex.NotFoundError):
        return ModalUnavailable(
            "error", f"the Modal app {APP_NAME!r} is not deployed ({detail}); run `modal deploy app/modal_app.py`"
        )
    return ModalUnavailable("error", f"the Modal call failed ({detail})")


Outcome = Result | ModalUnavailable
_deployment: dict[str, Any] = {}
"""What the deployment last said about itself (GPU, reservation): prices a call cancelled before it replied."""


async def call_modal(items: list[ModalItem], timeout_s: float, fallback_gpu: str = "A10G") -> list[Outcome]:
    """Convert ``items`` in one Modal call; one outcome per item: a result (a conversion or a failure
    of that document), or ``ModalUnavailable`` when the call failed as a whole (convert it locally).
    Documents the container had no time to start are sent again in a further call."""
    outcomes: list[Outcome | None] = [None] * len(items)
    started = time.monotonic()
    deadline = started + timeout_s
    todo = list(range(len(items)))
    try:
        modal_breaker.check()  # open: straight to local, without extending the pause
    except ModalUnavailable as open_breaker:
        return [open_breaker] * len(items)
    try:
        deployed = _lookup_class()
        await _connect(deployed, min(MODAL_CONNECT_TIMEOUT_S, timeout_s))
        method = getattr(deployed(), METHOD_NAME)
        for _round in range(NOT_STARTED_ROUNDS):
            reply = await _spawn_and_wait(method, [items[i] for i in todo], deadline, fallback_gpu)
            replies = _results_of(reply, len(todo))
            container = reply["container"]
            _deployment.update({k: container.get(k) for k in ("gpu", "cpu_cores", "memory_mib")})
            again = [i for i, one in zip(todo, replies, strict=True) if one.get("not_started")]
            for i, one in zip(todo, replies, strict=True):
                if not one.get("not_started"):
                    outcomes[i] = _from_reply(one, container, time.monotonic() - started, items[i].media_type)
            if not again or len(again) == len(todo):  # all done, or no progress: the time is up
                todo = again
                break
            todo = again
    except ImportError as exc:
        down = ModalUnavailable("error", f"the modal package is not installed ({exc}); install the `cloud` extra")
        return [o if o is not None else down for o in outcomes]
    except ModalUnavailable as exc:
        modal_breaker.trip(exc)
        return [o if o is not None else exc for o in outcomes]
    except Exception as exc:
        down = classify_modal_error(exc)
        down.__cause__ = exc
        modal_breaker.trip(down)
        return [o if o is not None else down for o in outcomes]
    left = [i for i, o in enumerate(outcomes) if o is None]
    for i in left:
        outcomes[i] = ConversionFailure(
            "Timeout",
            f"the Modal calls ran out of time ({timeout_s:g} s) before this document could start",
            backend="modal",
        )
    return [o for o in outcomes if o is not None]


async def _spawn_and_wait(method: Any, items: list[ModalItem], deadline: float, fallback_gpu: str) -> Any:
    """``spawn`` the call, ``get`` it until the deadline, ``cancel`` it (terminating its container, so it
    stops billing at once) when the deadline passes."""
    payload = [item.payload() for item in items]
    remaining = deadline - time.monotonic()
    spawned = time.monotonic()
    call = await method.spawn.aio(payload, time.time() + remaining - DEADLINE_MARGIN_S)
    try:
        return await call.get.aio(timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:  # what FunctionCall.get raises when its timeout passes (the builtin)
        held = time.monotonic() - spawned
        cancelled = await _cancel(call)
        share = held / max(1, len(items))
        usage = ModalUsage(
            gpu=str(_deployment.get("gpu") or fallback_gpu),
            container_s=round(share, 4),
            cpu_cores=_reserved_cpu(),
            memory_gib=_reserved_gib(),
            busy_s=round(share, 4),
            batch_documents=len(items),
            cancelled=True,
        )
        log.warning(
            "Modal call cancelled after the client's timeout",
            extra={"documents": len(items), "held_s": round(held, 3), "cancelled": cancelled},
        )
        raise ModalUnavailable(
            "timeout",
            f"the Modal call did not finish within {held:.0f} s and was "
            + ("cancelled" if cancelled else "abandoned (cancelling it failed; it may still run)"),
            usage=usage,
        ) from None


async def _cancel(call: Any) -> bool:
    try:
        await asyncio.wait_for(call.cancel.aio(terminate_containers=True), timeout=CANCEL_TIMEOUT_S)
    except Exception as exc:  # the call may still run; its cost reaches the ledger through reconcile
        log.error("could not cancel the Modal call", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    return True


def _reserved_cpu() -> float:
    return float(_deployment.get("cpu_cores") or config.current().modal.cpu or 4.0)


def _reserved_gib() -> float:
    return float(_deployment.get("memory_mib") or config.current().modal.memory_mb or 12288) / 1024


def _results_of(reply: Any, expected: int) -> list[dict[str, Any]]:
    results = reply.get("results") if isinstance(reply, dict) else None
    if not isinstance(results, list) or len(results) != expected or not isinstance(reply.get("container"), dict):
        raise ModalUnavailable(
            "error",
            f"the Modal converter returned {type(reply).__name__} for {expected} "
            "documents; redeploy with `modal deploy app/modal_app.py`",
        )
    return results


def usage_of(one: dict[str, Any], container: dict[str, Any]) -> ModalUsage | None:
    usage = one.get("usage")
    if not usage:
        return None
    return ModalUsage(
        gpu=str(container.get("gpu") or "A10G").upper(),
        container_s=float(usage["container_s"]),
        cpu_cores=float(container.get("cpu_cores") or 0.0),
        memory_gib=float(container.get("memory_mib") or 0) / 1024,
        busy_s=float(usage.get("busy_s") or 0.0),
        cold_start_s=float(usage.get("cold_start_s") or 0.0),
        idle_s=float(usage.get("idle_s") or 0.0),
        container_id=container.get("id"),
        started_container=bool(usage.get("started_container")),
        batch_documents=int(usage.get("batch_documents") or 1),
        device=container.get("device"),
    )


def _from_reply(one: dict[str, Any], container: dict[str, Any], total_s: float, media_type: str) -> Result:
    usage = usage_of(one, container)
    if not one.get("ok"):
        failure = ConversionFailure.from_dict(one.get("failure") or {}, backend="modal")
        failure.modal_usage = [usage] if usage else []
        return failure
    return ConversionOutput(
        docling_json=one["docling_json"],
        markdown=one["markdown"],
        page_count=int(one["page_count"]),
        backend="modal",
        pipeline=one["pipeline"],
        docling_version=one["docling_version"],
        convert_s=float(one["convert_s"]),
        total_s=total_s,
        cpu_s=0.0,
        gpu_s=usage.container_s if usage else 0.0,
        gpu=usage.gpu if usage else container.get("gpu"),
        media_type=media_type,
        warnings=list(one.get("warnings") or []),
        slices=[list(one["page_range"])] if one.get("page_range") else None,
        modal_usage=[usage] if usage else [],
    )
