"""A stand-in for the deployed Modal class, faithful to what Modal 1.6.4's client does (read in
``modal/cls.py`` and ``modal/_functions.py``):

* ``modal.Cls.from_name(app, name)`` is lazy; ``.hydrate.aio()`` looks it up; calling it gives an
  object whose method has ``.spawn.aio(*args)`` returning a ``FunctionCall``;
* ``FunctionCall.get.aio(timeout=)`` returns the result, or raises the **builtin** ``TimeoutError``
  when the timeout passes -- and the call keeps running (and billing) on Modal;
* ``FunctionCall.cancel.aio(terminate_containers=)`` stops it.

By default a call runs the real function body, ``Converter(device="cpu").convert.local(...)``, in a
thread, on one ``Converter`` object for the whole stand-in: like one warm container, its first call
is the cold start and later calls find it warm.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import modal
import pytest

Behaviour = Callable[[list[dict[str, Any]], float | None], Any]


class _Aio:
    """``thing.aio(...)``, the way synchronicity exposes Modal's async methods."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.aio = fn


@dataclass
class Call:
    """One spawned call: its payload, how long it ran, whether it was cancelled."""

    items: list[dict[str, Any]]
    deadline_unix: float | None
    task: asyncio.Task[Any]
    spawned_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    cancelled_with: dict[str, Any] | None = None

    @property
    def billed_s(self) -> float:
        """What Modal bills for this call: until it finished or was cancelled."""
        return (self.ended_at or time.monotonic()) - self.spawned_at


class StandInFunctionCall:
    def __init__(self, call: Call) -> None:
        self._call = call
        self.get = _Aio(self._get)
        self.cancel = _Aio(self._cancel)

    async def _get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        done, _ = await asyncio.wait({self._call.task}, timeout=timeout)
        if not done:
            raise TimeoutError()  # modal/_functions.py poll_function: the builtin, and the call runs on
        return self._call.task.result()

    async def _cancel(self, terminate_containers: bool = False) -> None:
        self._call.cancelled_with = {"terminate_containers": terminate_containers}
        self._call.ended_at = time.monotonic()
        self._call.task.cancel()


class StandInDeployment:
    """What ``modal.Cls.from_name("chronos-docling", "Converter")`` returns."""

    def __init__(self, behaviour: Behaviour | None = None, reply_gpu: str | None = None) -> None:
        self.behaviour = behaviour
        self.reply_gpu = reply_gpu  # the GPU the deployment reports (else the body's own report)
        self.calls: list[Call] = []
        self.replies: list[Any] = []  # what each finished call returned
        self.looked_up: list[tuple[str, str]] = []
        self.hydrate = _Aio(self._hydrate)
        self.spawn = _Aio(self._spawn)
        self._body: Any = None
        self._lock = threading.Lock()

    async def _hydrate(self) -> StandInDeployment:
        return self

    def __call__(self) -> StandInDeployment:  # Cls() -> Obj
        return self

    @property
    def convert(self) -> StandInDeployment:  # Obj.convert -> the method (has .spawn)
        return self

    async def _spawn(self, items: list[dict[str, Any]], deadline_unix: float | None = None) -> StandInFunctionCall:
        task = asyncio.get_running_loop().create_task(self._run(items, deadline_unix))
        call = Call(items, deadline_unix, task)
        task.add_done_callback(lambda _t: setattr(call, "ended_at", call.ended_at or time.monotonic()))
        self.calls.append(call)
        return StandInFunctionCall(call)

    async def _run(self, items: list[dict[str, Any]], deadline_unix: float | None) -> Any:
        if self.behaviour is not None:
            reply = self.behaviour(items, deadline_unix)
            if asyncio.iscoroutine(reply):
                reply = await reply
        else:
            reply = await asyncio.to_thread(self._one_at_a_time, items, deadline_unix)
        if self.reply_gpu and isinstance(reply, dict):
            reply["container"]["gpu"] = self.reply_gpu
        self.replies.append(reply)
        return reply

    def _one_at_a_time(self, items: list[dict[str, Any]], deadline_unix: float | None) -> Any:
        with self._lock:  # a container runs one input at a time (no @modal.concurrent)
            return self.body().convert.local(items, deadline_unix)

    def body(self) -> Any:
        """One ``Converter`` object for the stand-in's life: one warm container."""
        if self._body is None:
            from app.modal_app import Converter

            self._body = Converter(device="cpu")  # type: ignore[call-arg]  # a modal.parameter
        return self._body

    @property
    def documents_sent(self) -> list[int]:
        return [len(c.items) for c in self.calls]


@pytest.fixture
def deploy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., StandInDeployment]]:
    """Install a stand-in deployment (Modal configured: tokens set); record the names looked up."""
    from app.convert.modal_client import modal_breaker

    def install(behaviour: Behaviour | None = None, reply_gpu: str | None = None) -> StandInDeployment:
        fake = StandInDeployment(behaviour, reply_gpu)

        def from_name(app_name: str, name: str, **_: Any) -> StandInDeployment:
            fake.looked_up.append((app_name, name))
            return fake

        monkeypatch.setattr(modal.Cls, "from_name", from_name)
        monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
        monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
        return fake

    modal_breaker.reset()
    yield install
    modal_breaker.reset()
