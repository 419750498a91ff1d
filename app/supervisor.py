"""A small supervisor of named services: start them in order, restart one that crashes, stop them in
reverse order.

A service is a coroutine function taking a stop event: it runs until the event is set and then
returns (a subscription, the job runner), or does one thing and returns (the warm-up,
``once=True``). One that raises is restarted after a backoff that doubles from ``backoff`` up to
``max_backoff`` (reset once it has run for ``healthy_after`` seconds), logged with its name; the
others keep running. On shutdown each service, last started first, gets its stop event and
``stop_timeout`` seconds to return before it is cancelled -- so the job runner, started last, has
finished or released its jobs before the subscriptions that feed and follow it stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from events.hub import wait_any

logger = logging.getLogger(__name__)

ServiceFn = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class Service:
    name: str
    run: ServiceFn
    once: bool = False  # done when it returns (not restarted then)
    stop_timeout: float = 10.0


@dataclass
class ServiceState:
    service: Service
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    starts: int = 0
    crashes: int = 0
    last_error: str | None = None


class Supervisor:
    def __init__(
        self,
        services: Sequence[Service],
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique: {', '.join(names)}")
        self.states = {s.name: ServiceState(s) for s in services}
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.stopped: list[str] = []  # names, in the order they stopped

    async def run(self, stop: asyncio.Event) -> None:
        """Run every service until ``stop`` is set, then stop them in reverse order."""
        async with self.running():
            await stop.wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        """Services run while the block runs; leaving it (also by an error) stops them in order."""
        try:
            for state in self.states.values():
                state.stop = asyncio.Event()
                state.task = asyncio.create_task(self._keep_running(state), name=state.service.name)
                logger.info("started %s", state.service.name, extra={"action": "start", "service": state.service.name})
            yield self
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for state in reversed(list(self.states.values())):
            await self._stop(state)

    async def _stop(self, state: ServiceState) -> None:
        state.stop.set()
        task = state.task
        if task is None:
            return
        name, timeout = state.service.name, state.service.stop_timeout
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            logger.warning(
                "service %s did not stop within %.0fs; cancelling it",
                name,
                timeout,
                extra={"action": "stop", "service": name},
            )
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state.task = None
        self.stopped.append(name)
        logger.info("stopped %s", name, extra={"action": "stop", "service": name})

    async def _keep_running(self, state: ServiceState) -> None:
        service, stop = state.service, state.stop
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            state.starts += 1
            try:
                await service.run(stop)
            except Exception as exc:
                state.crashes += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                failures = 1 if time.monotonic() - started >= self.healthy_after else failures + 1
                if service.once:
                    logger.error(
                        "service %s failed: %s",
                        service.name,
                        state.last_error,
                        exc_info=True,
                        extra={"action": "crash", "service": service.name, "error": state.last_error},
                    )
                    return
                delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
                logger.error(
                    "service %s crashed: %s; restarting in %.2fs",
                    service.name,
                    state.last_error,
                    delay,
                    exc_info=True,
                    extra={
                        "action": "restart",
                        "service": service.name,
                        "error": state.last_error,
                        "crashes": state.crashes,
                        "delay_s": delay,
                    },
                )
                await wait_any(delay, stop)
                continue
            if service.once or stop.is_set():
                return
            failures += 1
            delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
            logger.warning(
                "service %s returned before it was asked to stop; restarting in %.2fs",
                service.name,
                delay,
                extra={"action": "restart", "service": service.name, "delay_s": delay},
            )
            await wait_any(delay, stop)
