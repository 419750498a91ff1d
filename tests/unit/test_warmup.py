"""A worker stopped while it still warms up exits at once: the warm-up does not hold the process."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.config import Settings
from app.pipeline import warmup


def test_a_cancelled_warm_up_does_not_hold_asyncio_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``asyncio.run`` joins the default executor's threads before it returns, so a warm-up run there
    kept a stopped worker alive until the model had loaded. Here the converter's warm-up never ends."""
    release = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait()

    monkeypatch.setattr(warmup, "warm_converter", stuck)

    async def worker() -> None:
        task = asyncio.create_task(warmup.warm_up(["convert"], Settings()))
        await asyncio.to_thread(started.wait)
        task.cancel()  # SIGTERM: the supervisor cancels its services
        with pytest.raises(asyncio.CancelledError):
            await task

    runner = threading.Thread(target=asyncio.run, args=(worker(),), daemon=True)
    runner.start()
    try:
        runner.join(timeout=60)  # a bound for a loaded machine; the old code never returned here
        assert not runner.is_alive(), "asyncio.run did not return while the warm-up was still running"
    finally:
        release.set()


def test_warm_up_reports_each_part_and_survives_a_failing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("no models here")

    monkeypatch.setattr(warmup, "warm_converter", broken)
    monkeypatch.setattr(warmup, "warm_chunker", lambda: None)
    monkeypatch.setattr(warmup, "warm_embedder", lambda _settings: None)
    took = asyncio.run(warmup.warm_up(["convert", "chunk", "embed"], Settings()))
    assert set(took) == {"converter", "chunker", "embedder"}
    assert all(seconds >= 0 for seconds in took.values())
