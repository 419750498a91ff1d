"""The supervisor: named services started in order, a crashing one restarted with growing backoff and
logged by name (the others untouched), stopped in reverse order, a stuck one cancelled."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from app.supervisor import Service, ServiceFn, Supervisor


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


def until_stopped(name: str, log: list[str]) -> ServiceFn:
    async def run(stop: asyncio.Event) -> None:
        log.append(f"start {name}")
        await stop.wait()
        log.append(f"stop {name}")

    return run


async def test_starts_in_order_and_stops_in_reverse_order() -> None:
    log: list[str] = []
    supervisor = Supervisor([Service(n, until_stopped(n, log)) for n in ("warm-up", "dispatcher", "jobs")])
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    await eventually(lambda: len(log) == 3)
    assert log == ["start warm-up", "start dispatcher", "start jobs"]
    stop.set()
    await asyncio.wait_for(task, 10)
    assert log[3:] == ["stop jobs", "stop dispatcher", "stop warm-up"]
    assert supervisor.stopped == ["jobs", "dispatcher", "warm-up"]


async def test_a_crashing_service_is_restarted_with_backoff_and_logged_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.supervisor")
    log: list[str] = []
    attempts = 0

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ConnectionError(f"crash {attempts}")
        log.append("flaky is up")
        await stop.wait()

    supervisor = Supervisor(
        [Service("steady", until_stopped("steady", log)), Service("flaky", flaky)], backoff=0.01, max_backoff=0.03
    )
    async with supervisor.running():
        await eventually(lambda: "flaky is up" in log)
        assert log == ["start steady", "flaky is up"]  # the other service was never restarted
    state = supervisor.states["flaky"]
    assert (state.starts, state.crashes, state.last_error) == (4, 3, "ConnectionError: crash 3")
    restarts = [r for r in caplog.records if getattr(r, "action", None) == "restart"]
    assert [r.getMessage() for r in restarts] == [
        f"service flaky crashed: ConnectionError: crash {n}; restarting in {d}s"
        for n, d in ((1, "0.01"), (2, "0.02"), (3, "0.03"))
    ]
    assert [getattr(r, "delay_s", None) for r in restarts] == [0.01, 0.02, 0.03]  # doubling, capped
    assert all(getattr(r, "service", None) == "flaky" and r.exc_info for r in restarts)
    assert supervisor.states["steady"].starts == 1


async def test_a_service_that_returns_early_is_restarted_unless_it_runs_once() -> None:
    runs = {"loop": 0, "once": 0}

    def counting(name: str) -> ServiceFn:
        async def run(_stop: asyncio.Event) -> None:
            runs[name] += 1

        return run

    supervisor = Supervisor(
        [Service("loop", counting("loop")), Service("once", counting("once"), once=True)], backoff=0.01
    )
    async with supervisor.running():
        await eventually(lambda: runs["loop"] >= 3)
    assert runs["once"] == 1


async def test_a_service_that_ignores_stop_is_cancelled_and_the_rest_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    cancelled = asyncio.Event()

    async def stubborn(_stop: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()  # never looks at its stop event
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor = Supervisor(
        [Service("first", until_stopped("first", log)), Service("stubborn", stubborn, stop_timeout=0.05)]
    )
    async with supervisor.running():
        await eventually(lambda: log == ["start first"])
    assert cancelled.is_set()
    assert supervisor.stopped == ["stubborn", "first"]
    assert log == ["start first", "stop first"]
    assert any("stubborn did not stop" in r.getMessage() for r in caplog.records)


def test_service_names_are_unique() -> None:
    async def noop(_stop: asyncio.Event) -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        Supervisor([Service("a", noop), Service("a", noop)])
