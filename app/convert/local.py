"""Local Docling in child processes: a warm pool with a per-document timeout and a memory cap.

Importing Docling (and torch) takes ~10 s, so a *fork server* imports it once (``multiprocessing``
forkserver with ``app.convert.preload`` preloaded: Docling, then ``gc.freeze``) and every converter
process is forked from it: starting or restarting one costs well under a second. Each converter process serves
documents one at a time and is reused; it is killed and replaced after a timeout, a memory overrun, a
crash or a Docling error, and recycled after ``max_documents`` documents (Docling leaks memory).

Limits, enforced by the parent while it waits for an answer:
* time: ``timeout_s`` per document, then SIGKILL;
* memory: the child's resident set (RSS, polled every 0.1 s) above ``memory_mb`` → SIGKILL. RSS is
  used because RLIMIT_AS alone is a poor cap here: importing Docling + torch already maps ~0.9 GB of
  address space for ~0.37 GB resident. A generous RLIMIT_AS (``address_space_mb``: twice the cap,
  at least cap + 2 GB) still stops a runaway allocation between two polls; Python then raises
  MemoryError in the child, which reports ``MemoryLimit`` and exits.

Environment: the fork server (and multiprocessing's resource tracker, started with it) is launched with
``app.process_env.converter_env()``, an allow-list without the service's secrets; converter processes
are forked from it and inherit only that (see ``_clean_spawn``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.util
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from app import config
from app.convert import child, errors
from app.convert.options import ConversionOutput, ConvertOptions, docling_version
from app.process_env import converter_env

log = logging.getLogger(__name__)

POLL_S = 0.1


def address_space_mb(memory_mb: int) -> int:
    return max(2 * memory_mb, memory_mb + 2048)


def default_pool_size() -> int:
    """``CHRONOS_CONVERT_PROCESSES`` (Settings.convert.processes), else half the cores, 1 to 4."""
    configured = config.current().convert.processes
    if configured:
        return max(1, configured)
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def slow_after_s() -> float:
    """``CHRONOS_CONVERT_SLOW_S`` (default 20): a conversion running longer than this is *slow*. While
    every converter process is busy with a slow one, the pool starts an extra process for the next
    document (``CHRONOS_CONVERT_BURST``), and a worker lets another convert job start beside it."""
    return config.current().convert.slow_s


def default_burst() -> int:
    """``CHRONOS_CONVERT_BURST`` (default 1): extra converter processes allowed while all are slow."""
    return max(0, config.current().convert.burst)


_context_lock = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["app.convert.preload"])
            _context = ctx
        return _context


_spawn_lock = threading.Lock()
_spawned: list[subprocess.Popen[bytes]] = []  # kept alive: multiprocessing reaps these pids itself


def _spawn_clean(path: Any, args: Sequence[Any], passfds: Sequence[int]) -> int:
    """``multiprocessing.util.spawnv_passfds`` (how the fork server and the resource tracker are
    started: fork + exec, keeping only ``passfds`` and stdio) with ``converter_env()`` instead of
    this process's environment, so no converter inherits the service's secrets."""
    proc = subprocess.Popen(
        [os.fsdecode(a) for a in args],
        executable=os.fsdecode(path),
        pass_fds=tuple(sorted(map(int, passfds))),
        close_fds=True,
        env=converter_env(),
        restore_signals=False,
    )
    _spawned.append(proc)
    return proc.pid


@contextlib.contextmanager
def _clean_spawn() -> Iterator[None]:
    """While a converter process starts, multiprocessing launches a missing (or dead) fork server
    with the minimal environment. ``spawnv_passfds`` has no ``env`` parameter, so it is swapped for
    the duration, under a lock (concurrent starts must not restore each other's swap)."""
    with _spawn_lock:
        original = multiprocessing.util.spawnv_passfds
        multiprocessing.util.spawnv_passfds = _spawn_clean
        try:
            yield
        finally:
            multiprocessing.util.spawnv_passfds = original


class Cancelled(Exception):
    """The caller gave up on the conversion (task cancelled); the child was killed."""


class ConverterProcess:
    """One forked converter process and the parent's end of its pipe."""

    def __init__(self, memory_mb: int, startup_timeout_s: float | None = None) -> None:
        if startup_timeout_s is None:
            startup_timeout_s = config.current().convert.startup_timeout_s
        ctx = _forkserver()
        self.memory_mb = memory_mb
        self.address_space_mb = address_space_mb(memory_mb)
        self.documents = 0
        fd, self.log_path = tempfile.mkstemp(prefix="chronos-converter-", suffix=".log")
        os.close(fd)
        parent_end, child_end = ctx.Pipe()
        self.conn: Connection = parent_end
        self.process = ctx.Process(
            target=child.serve,
            args=(child_end, self.address_space_mb, self.log_path, os.getpid()),
            name="chronos-converter",
            daemon=True,
        )
        started = time.perf_counter()
        with _clean_spawn():
            self.process.start()
        child_end.close()
        self.ps = psutil.Process(self.process.pid)
        try:
            ready = self._receive(time.monotonic() + startup_timeout_s, None, starting=True)
        except errors.ConversionFailure as failure:
            self.kill()
            raise errors.ConversionFailure(
                errors.DOCLING_ERROR,
                f"the local Docling converter did not start ({failure.message}); is the `local` extra "
                f"installed? log: {self.log_tail()}",
                retryable=False,
            ) from failure
        self.ready = ready
        self.startup_s = time.perf_counter() - started
        log.info(
            "converter process started",
            extra={"pid": self.process.pid, "startup_s": self.startup_s, "rss_mb": ready.get("rss_mb")},
        )

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def request(
        self, message: dict[str, Any], timeout_s: float, cancel: threading.Event | None
    ) -> tuple[dict[str, Any], float, int | None]:
        """Send one request; return (reply, cpu seconds, page count if reported). Kills on any limit."""
        self.documents += 1
        cpu_before = self._cpu()
        try:
            self.conn.send(message)
        except OSError:  # died while idle
            self.process.join(1.0)
            raise self._death(None) from None
        page_count: list[int | None] = [None]
        reply = self._receive(
            time.monotonic() + timeout_s, cancel, page_count=page_count, timeout_s=timeout_s, cpu_before=cpu_before
        )
        return reply, max(0.0, self._cpu() - cpu_before), page_count[0]

    def _receive(
        self,
        deadline: float,
        cancel: threading.Event | None,
        *,
        starting: bool = False,
        page_count: list[int | None] | None = None,
        timeout_s: float = 0.0,
        cpu_before: float = 0.0,
    ) -> dict[str, Any]:
        pages: int | None = None
        while True:
            if cancel is not None and cancel.is_set():
                self.kill()
                raise Cancelled("conversion cancelled by the caller")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                cpu = self._cpu() - cpu_before
                self.kill()
                what = "start" if starting else f"finish within its {timeout_s:g} s per-document limit"
                raise errors.ConversionFailure(
                    errors.TIMEOUT,
                    f"the conversion did not {what} (CPU used: {cpu:.1f} s); the converter process was killed",
                    page_count=pages,
                )
            try:
                ready = self.conn.poll(min(POLL_S, remaining))
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                message = None
                self.process.join(1.0)
                if self.process.is_alive():
                    self.kill()
                raise self._death(pages) from None
            if message is not None:
                if message.get("event") == "inspected":
                    pages = message.get("page_count")
                    if page_count is not None:
                        page_count[0] = pages
                    continue
                return dict(message)
            rss = self._rss_mb()
            if rss > self.memory_mb:
                self.kill()
                raise errors.ConversionFailure(
                    errors.MEMORY_LIMIT,
                    f"the converter process used {rss:.0f} MB, over its {self.memory_mb} MB cap, and was killed",
                    page_count=pages,
                )
            if not self.process.is_alive():
                raise self._death(pages)

    def _death(self, pages: int | None) -> errors.ConversionFailure:
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        if code == -signal.SIGKILL:  # not by us: the kernel's OOM killer
            return errors.ConversionFailure(
                errors.MEMORY_LIMIT, f"the converter process {how} (out of memory?)", page_count=pages
            )
        return errors.ConversionFailure(
            errors.CRASHED,
            f"the converter process {how} while converting this document; log: {self.log_tail()}",
            retryable=False,
            page_count=pages,
        )

    def _rss_mb(self) -> float:
        try:
            return float(self.ps.memory_info().rss) / (1024 * 1024)
        except psutil.Error:
            return 0.0

    def _cpu(self) -> float:
        try:
            t = self.ps.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def rss_mb(self) -> float:
        return self._rss_mb()

    def log_tail(self, size: int = 600) -> str:
        try:
            data = Path(self.log_path).read_bytes()[-size:]
        except OSError:
            return "(no log)"
        return data.decode("utf-8", "replace").strip().replace("\n", " | ") or "(empty)"

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self.conn.close()
        Path(self.log_path).unlink(missing_ok=True)

    def stop(self) -> None:
        try:
            if self.process.is_alive():
                self.conn.send({"op": "exit"})
                self.process.join(2.0)
        except OSError:
            pass
        self.kill()


# Failures after which the process is still trusted with the next document (checked before Docling ran,
# or Docling returned normally).
_CLEAN_FAILURES = frozenset(
    {
        errors.PASSWORD_PROTECTED,
        errors.NO_TEXT,
        errors.MODELS_UNAVAILABLE,
        errors.UNSUPPORTED_MEDIA_TYPE,
        errors.EMPTY_FILE,
    }
)


class ConverterPool:
    """Up to ``size`` warm converter processes shared by every conversion in this process, plus up to
    ``burst`` extra ones while every process has been busy for ``slow_after_s`` or more: one slow
    document (hostile input, a huge file) never holds back the small ones queued behind it. An extra
    process is stopped when it is handed back, so the pool returns to ``size``."""

    def __init__(
        self,
        size: int | None = None,
        max_documents: int = 200,
        *,
        burst: int | None = None,
        slow_after: float | None = None,
    ) -> None:
        self.size = size or default_pool_size()
        self.max_documents = max_documents
        self.burst = default_burst() if burst is None else burst
        self.slow_after_s = slow_after_s() if slow_after is None else slow_after
        self._idle: list[ConverterProcess] = []
        self._live = 0
        self._busy: dict[int, float] = {}  # id(process) -> when it was handed out (monotonic)
        self._cond = threading.Condition()
        self.started = 0  # processes started so far (for tests and the bench)
        self.bursts = 0  # extra processes started because every process was busy with a slow document
        self.startup_s: list[float] = []

    def warm(self, memory_mb: int = ConvertOptions().memory_mb) -> None:
        """Start a converter process now (e.g. before a benchmark) instead of at the first document."""
        proc = self._acquire(memory_mb)
        self._release(proc, healthy=True)

    def convert(
        self,
        path: Path,
        media_type: str,
        options: ConvertOptions,
        page_range: tuple[int, int] | None = None,
        cancel: threading.Event | None = None,
    ) -> ConversionOutput:
        started = time.perf_counter()
        message = {
            "op": "convert",
            "path": str(path),
            "media_type": media_type,
            "pipeline": options.pipeline,
            "page_range": list(page_range) if page_range else None,
        }
        reply, cpu_s, pages, held_s = self._run(message, options, cancel)
        if not reply.get("ok"):
            failure = errors.ConversionFailure.from_dict(reply["failure"], backend="local")
            if failure.page_count is None:
                failure.page_count = pages
            failure.held_s = held_s
            raise failure
        return ConversionOutput(
            docling_json=reply["docling_json"],
            markdown=reply["markdown"],
            page_count=int(reply["page_count"]),
            backend="local",
            pipeline=reply["pipeline"],
            docling_version=reply["docling_version"],
            convert_s=float(reply["convert_s"]),
            total_s=time.perf_counter() - started,
            cpu_s=cpu_s,
            gpu_s=0.0,
            gpu=None,
            media_type=media_type,
            warnings=list(reply.get("warnings") or []),
            slices=[list(page_range)] if page_range else None,
            held_s=held_s,
        )

    def merge(self, json_docs: list[bytes], options: ConvertOptions) -> tuple[bytes, str, int, float]:
        reply, cpu_s, _, _ = self._run({"op": "merge", "json_docs": json_docs}, _housekeeping(options), None)
        if not reply.get("ok"):
            raise errors.ConversionFailure.from_dict(reply["failure"], backend="local")
        return reply["docling_json"], reply["markdown"], int(reply["page_count"]), cpu_s

    def inspect(self, path: Path, options: ConvertOptions) -> int | None:
        reply, _, _, _ = self._run({"op": "inspect", "path": str(path)}, _housekeeping(options), None)
        return reply.get("page_count") if reply.get("ok") else None

    def _run(
        self, message: dict[str, Any], options: ConvertOptions, cancel: threading.Event | None
    ) -> tuple[dict[str, Any], float, int | None, float]:
        """(reply, CPU seconds, pages, seconds the process was held); a failure carries ``held_s`` too."""
        proc = self._acquire(options.memory_mb)
        healthy = False
        started = time.perf_counter()
        try:
            reply, cpu_s, pages = proc.request(message, options.timeout_s, cancel)
            failure = reply.get("failure") or {}
            healthy = reply.get("ok", False) or failure.get("error_class") in _CLEAN_FAILURES
            return reply, cpu_s, pages, time.perf_counter() - started
        except errors.ConversionFailure as failure:
            failure.held_s = time.perf_counter() - started
            raise
        finally:
            self._release(proc, healthy)

    def _acquire(self, memory_mb: int) -> ConverterProcess:
        evict: ConverterProcess | None = None
        with self._cond:
            while True:
                for proc in [p for p in self._idle if not p.alive()]:
                    self._idle.remove(proc)  # died while idle (e.g. killed from outside)
                    proc.kill()
                    self._live -= 1
                for proc in self._idle:
                    if proc.memory_mb == memory_mb:
                        self._idle.remove(proc)
                        self._busy[id(proc)] = time.monotonic()
                        return proc
                if self._live < self.size:
                    self._live += 1
                    break
                if self._idle:  # a process with other limits: replace it
                    evict = self._idle.pop(0)
                    break
                if self._live < self.size + self.burst and self._all_slow():
                    self._live += 1
                    self.bursts += 1
                    log.info(
                        "every converter process is busy with a slow document: starting an extra one",
                        extra={"busy": len(self._busy), "slow_after_s": self.slow_after_s},
                    )
                    break
                # Wake up to look again when a busy process may have become slow.
                self._cond.wait(0.5 if self._live < self.size + self.burst else None)
        if evict is not None:
            evict.stop()
        try:
            proc = ConverterProcess(memory_mb)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._busy[id(proc)] = time.monotonic()
        self.started += 1
        self.startup_s.append(proc.startup_s)
        return proc

    def _all_slow(self) -> bool:
        """Every live process is converting, each for ``slow_after_s`` or more (callers hold the lock)."""
        now = time.monotonic()
        return len(self._busy) == self._live and all(now - t >= self.slow_after_s for t in self._busy.values())

    def _release(self, proc: ConverterProcess, healthy: bool) -> None:
        with self._cond:
            self._busy.pop(id(proc), None)
            extra = self._live > self.size  # a burst is over: this process goes, the pool is back to size
        keep = (
            healthy
            and not extra
            and proc.alive()
            and proc.documents < self.max_documents
            and proc.rss_mb() < 0.8 * proc.memory_mb
        )
        if not keep:
            proc.kill()
        with self._cond:
            if keep:
                self._idle.append(proc)
            else:
                self._live -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for proc in idle:
            proc.stop()


def _housekeeping(options: ConvertOptions) -> ConvertOptions:
    """Counting pages and merging slices get at least a minute, whatever the per-document limit."""
    return dataclasses.replace(options, timeout_s=max(options.timeout_s, 60.0))


_pool: ConverterPool | None = None
_pool_lock = threading.Lock()
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="chronos-convert")


def default_pool() -> ConverterPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ConverterPool()
            atexit.register(_pool.close)
        return _pool


def shutdown(timeout_s: float = 5.0) -> bool:
    """Stop this process's converter processes and the fork server it started, and reap the fork
    server; True if one was stopped.

    Left alone, the fork server exits by itself when this process does (its "alive" pipe closes), but
    unreaped: an orphan whose CPU time — Docling's imports, every converter process it reaped — no
    ``getrusage(RUSAGE_CHILDREN)`` of an ancestor ever sees. The bench's Chronos side calls this before
    it exits so its CPU-seconds are whole (``app/bench/cpu.py``). Uses multiprocessing's own
    ``ForkServer._stop`` (close the pipe, then ``waitpid``), in a daemon thread so a fork server that
    does not exit cannot hang the caller past ``timeout_s``.
    """
    with _pool_lock:
        pool = _pool
    if pool is not None:
        pool.close()
    import multiprocessing.forkserver

    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None or not hasattr(server, "_stop"):
        return False
    stopper = threading.Thread(target=server._stop, name="chronos-forkserver-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        log.warning("the converter fork server did not exit within %.0f s; left to exit by itself", timeout_s)
        return False
    return True


async def convert_local(
    path: Path,
    media_type: str,
    options: ConvertOptions,
    page_range: tuple[int, int] | None = None,
    pool: ConverterPool | None = None,
) -> ConversionOutput:
    """Convert one file with local Docling in a converter process; raises ``ConversionFailure``."""
    target = pool or default_pool()
    cancel = threading.Event()
    call = functools.partial(target.convert, path, media_type, options, page_range, cancel)
    try:
        return await asyncio.get_running_loop().run_in_executor(_executor, call)
    except asyncio.CancelledError:
        cancel.set()
        raise


async def pdf_page_count(path: Path, options: ConvertOptions, pool: ConverterPool | None = None) -> int | None:
    """Pages of a PDF, counted by PDFium in a converter process (never in the service process)."""
    target = pool or default_pool()
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _executor, functools.partial(target.inspect, path, options)
        )
    except errors.ConversionFailure:
        return None


async def merge_local(
    json_docs: list[bytes], options: ConvertOptions, pool: ConverterPool | None = None
) -> tuple[bytes, str, int, float]:
    target = pool or default_pool()
    call = functools.partial(target.merge, json_docs, options)
    return await asyncio.get_running_loop().run_in_executor(_executor, call)


__all__ = [
    "ConverterPool",
    "ConverterProcess",
    "convert_local",
    "default_pool",
    "docling_version",
    "merge_local",
    "pdf_page_count",
]
