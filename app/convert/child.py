"""The converter process: forked from the fork server (Docling already imported), capped, serving
conversion requests over a pipe until told to exit or the parent goes away.

Protocol (pickled dicts over a ``multiprocessing`` pipe):
  child → parent  {"event": "ready", "pid", "rss_mb", "vm_mb", "address_space_mb", "docling_version"}
  parent → child  {"op": "convert", "path", "media_type", "pipeline", "page_range"}
  child → parent  {"event": "inspected", "page_count"}            (PDFs, before Docling runs)
  child → parent  {"event": "done", "ok": True, "docling_json", "markdown", "page_count", "pipeline",
                   "convert_s", "docling_version", "warnings"}  or  {"event": "done", "ok": False, "failure"}
  parent → child  {"op": "merge", "json_docs"} → {"event": "done", "ok": True, "docling_json", "markdown", ...}
  parent → child  {"op": "inspect", "path"} → {"event": "done", "ok": True, "page_count"}   (PDF pages)
  parent → child  {"op": "exit"}
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app import malloc
from app.convert import errors


def serve(conn: Connection, address_space_mb: int | None, log_path: str, worker_pid: int) -> None:
    """Entry point of a converter process (runs in the child)."""
    _redirect_output(log_path)
    _die_with_worker(worker_pid)
    malloc.tune()
    os.environ["HF_HUB_OFFLINE"] = "1"
    if address_space_mb:
        limit = address_space_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from app.convert.engine import Engine  # already imported by the fork server: no cost here

    engine = Engine()
    engine.warm_up()
    from app.convert.options import docling_version

    conn.send(
        {
            "event": "ready",
            "pid": os.getpid(),
            "rss_mb": _status_mb("VmRSS"),
            "vm_mb": _status_mb("VmSize"),
            "address_space_mb": address_space_mb,
            "docling_version": docling_version(),
        }
    )
    while True:
        try:
            request: dict[str, Any] = conn.recv()
        except (EOFError, OSError):
            return
        op = request.get("op")
        if op == "exit":
            return
        try:
            reply = _handle(engine, conn, request)
        except MemoryError:
            conn.send(
                _failed(
                    errors.ConversionFailure(
                        errors.MEMORY_LIMIT,
                        f"the converter process reached its {address_space_mb} MB address-space cap",
                    )
                )
            )
            return  # a process that ran out of memory is not trusted with another document
        conn.send(reply)
        del reply
        malloc.trim()  # the document's buffers go back to the OS while the worker reads the reply


def _handle(engine: Any, conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    try:
        if op == "convert":
            page_range = request.get("page_range")
            result = engine.convert(
                Path(request["path"]),
                request["media_type"],
                request.get("pipeline", "default"),
                tuple(page_range) if page_range else None,
                on_inspected=lambda pages: conn.send({"event": "inspected", "page_count": pages}),
            )
            return {
                "event": "done",
                "ok": True,
                "docling_json": result.docling_json,
                "markdown": result.markdown,
                "page_count": result.page_count,
                "pipeline": result.pipeline,
                "convert_s": result.convert_s,
                "docling_version": result.docling_version,
                "warnings": result.warnings,
            }
        if op == "inspect":
            from app.convert.engine import inspect_pdf

            pages, _ = inspect_pdf(Path(request["path"]).read_bytes())
            return {"event": "done", "ok": True, "page_count": pages}
        if op == "merge":
            docling_json, markdown, pages = engine.merge(request["json_docs"])
            return {
                "event": "done",
                "ok": True,
                "docling_json": docling_json,
                "markdown": markdown,
                "page_count": pages,
            }
        return _failed(errors.ConversionFailure(errors.DOCLING_ERROR, f"unknown converter request {op!r}"))
    except errors.ConversionFailure as failure:
        return _failed(failure)
    except MemoryError:
        raise
    except Exception as exc:  # the converter process reports, never dies on a bad document
        logging.getLogger(__name__).exception("conversion request failed")
        return _failed(errors.ConversionFailure(errors.DOCLING_ERROR, f"{type(exc).__name__}: {str(exc)[:500]}"))


def _failed(failure: errors.ConversionFailure) -> dict[str, Any]:
    return {"event": "done", "ok": False, "failure": failure.to_dict()}


def _die_with_worker(worker_pid: int) -> None:
    """Exit when the worker that asked for this process is gone, even mid-conversion, so a worker
    killed with SIGKILL leaves no converter running on. (PR_SET_PDEATHSIG would fire on the fork
    server's death, and the fork server was measured to outlive a SIGKILLed worker.)"""

    def watch() -> None:
        while _alive(worker_pid):
            time.sleep(0.25)
        os._exit(0)

    threading.Thread(target=watch, name="watch-worker", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (not Linux)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _redirect_output(log_path: str) -> None:
    """Docling prints and warns; keep it out of the parent's stdout (e.g. ``--json`` output)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.WARNING, force=True, stream=sys.stderr)


def _status_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0
