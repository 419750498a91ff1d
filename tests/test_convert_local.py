"""Real local Docling in converter processes: the whole corpus, bad input, time and memory limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from app.convert import ConversionFailure, ConversionOutput, ConvertOptions, convert_file
from app.convert.local import ConverterPool, address_space_mb, convert_local, default_pool
from app.convert.sniff import PDF, sniff_path
from tests.conftest import CORPUS

pytestmark = pytest.mark.local_models

ROOT = Path(__file__).resolve().parent.parent
ALL_FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())
LOCAL = ConvertOptions(backend="local")
REDP = CORPUS / "pdf" / "redp5110_sampled.pdf"  # 18 pages
MULTI = CORPUS / "pdf" / "multi_page.pdf"  # 5 pages


async def convert(path: Path, name: str | None = None, options: ConvertOptions = LOCAL) -> ConversionOutput:
    return await convert_file(path, filename=name or path.name, media_type=sniff_path(path), options=options)


async def failure_of(
    path: Path, name: str | None = None, media_type: str | None = None, options: ConvertOptions = LOCAL
) -> ConversionFailure:
    with pytest.raises(ConversionFailure) as info:
        await convert_file(path, filename=name or path.name, media_type=media_type or sniff_path(path), options=options)
    return info.value


async def assert_still_works() -> None:
    out = await convert(CORPUS / "md" / "duck.md")
    assert "duck" in out.markdown.lower()


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
async def test_every_corpus_file_converts_or_fails_clearly(path: Path) -> None:
    if "password_protected" in path.name:
        failure = await failure_of(path)
        assert failure.error_class == "PasswordProtected"
        assert "password" in failure.message and not failure.retryable
        return
    out = await convert(path)
    assert out.markdown.strip(), "empty Markdown"
    assert out.backend == "local" and out.fallback is None and out.gpu is None
    doc = json.loads(out.docling_json)
    assert doc["schema_name"] == "DoclingDocument"
    assert out.docling_version and out.convert_s >= 0 and out.total_s >= out.convert_s
    if path.suffix == ".pdf":
        assert out.pipeline == "native"  # no layout models on this machine
        assert out.page_count >= 1 and len(doc["pages"]) == out.page_count
        assert out.cpu_s > 0
    else:
        assert out.pipeline == "simple"


async def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    failure = await failure_of(empty, media_type=PDF)
    assert failure.error_class == "EmptyFile" and "empty" in failure.message and not failure.retryable
    await assert_still_works()


async def test_truncated_pdf(tmp_path: Path) -> None:
    data = MULTI.read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: len(data) // 2])
    failure = await failure_of(cut)
    assert failure.error_class == "CorruptPdf"
    assert "truncated or damaged" in failure.message and not failure.retryable
    await assert_still_works()


async def test_password_protected_pdf() -> None:
    failure = await failure_of(CORPUS / "pdf" / "password_protected_2206.01062_pg3.pdf")
    assert failure.error_class == "PasswordProtected" and "qpdf" in failure.message
    await assert_still_works()


async def test_lying_extensions_convert_by_content(tmp_path: Path) -> None:
    pdf_as_docx = tmp_path / "report.docx"
    shutil.copy(MULTI, pdf_as_docx)
    out = await convert_file(
        pdf_as_docx,
        filename="report.docx",
        media_type=("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        options=LOCAL,
    )
    assert out.media_type == PDF and out.pipeline == "native" and out.page_count == 5

    docx_as_pdf = tmp_path / "letter.pdf"
    shutil.copy(CORPUS / "docx" / "lorem_ipsum.docx", docx_as_pdf)
    out = await convert_file(docx_as_pdf, filename="letter.pdf", media_type=PDF, options=LOCAL)
    assert out.pipeline == "simple" and "Lorem ipsum" in out.markdown

    garbage = tmp_path / "invoice.pdf"
    garbage.write_bytes(os.urandom(20_000))
    failure = await failure_of(garbage, media_type=PDF)
    assert failure.error_class == "UnsupportedMediaType" and not failure.retryable
    assert "not a recognised document format" in failure.message and "application/pdf" in failure.message
    await assert_still_works()


async def test_unsupported_types(tmp_path: Path) -> None:
    png = tmp_path / "scan.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(500))
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "hello")
    for path, shown in ((png, "image/png"), (archive, "application/zip")):
        failure = await failure_of(path)
        assert failure.error_class == "UnsupportedMediaType" and shown in failure.message
        assert not failure.retryable
    await assert_still_works()


def models_on_this_machine() -> bool:
    from huggingface_hub import constants

    cached = any(Path(constants.HF_HUB_CACHE).glob("models--docling-project--docling-layout-*"))
    return cached or bool(os.environ.get("DOCLING_ARTIFACTS_PATH"))


async def test_standard_pipeline_without_models_fails_at_once() -> None:
    if models_on_this_machine():
        pytest.skip("Docling's models are present on this machine")
    started = time.perf_counter()
    failure = await failure_of(MULTI, options=ConvertOptions(backend="local", pipeline="standard"))
    assert time.perf_counter() - started < 30
    assert failure.error_class == "ModelsUnavailable" and not failure.retryable
    assert "DOCLING_ARTIFACTS_PATH" in failure.message
    await assert_still_works()


@pytest.fixture(scope="module")
def big_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 90-page PDF (the 18-page corpus sample five times): ~4 s and ~+320 MB to convert here."""
    import pypdfium2  # type: ignore[import-untyped]

    path = tmp_path_factory.mktemp("big") / "big.pdf"
    src, dst = pypdfium2.PdfDocument(REDP), pypdfium2.PdfDocument.new()
    for _ in range(5):
        dst.import_pages(src)
    dst.save(str(path))
    return path


@pytest.fixture
def pool() -> Iterator[ConverterPool]:
    p = ConverterPool(size=1)
    p.warm(LOCAL.memory_mb)
    yield p
    p.close()


def idle_pid(pool: ConverterPool) -> int:
    [proc] = pool._idle
    return proc.pid


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=timeout)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_child_is_capped_and_reused(pool: ConverterPool) -> None:
    pid = idle_pid(pool)
    soft, hard = psutil.Process(pid).rlimit(psutil.RLIMIT_AS)
    assert soft == hard == address_space_mb(LOCAL.memory_mb) * 1024 * 1024
    await convert_local(MULTI, PDF, LOCAL, pool=pool)
    await convert_local(CORPUS / "csv" / "csv-comma.csv", "text/csv", LOCAL, pool=pool)
    assert idle_pid(pool) == pid and pool.started == 1


async def test_timeout_kills_the_child_and_the_next_conversion_works(pool: ConverterPool, big_pdf: Path) -> None:
    pid = idle_pid(pool)
    started = time.perf_counter()
    with pytest.raises(ConversionFailure) as info:
        await convert_local(big_pdf, PDF, ConvertOptions(backend="local", timeout_s=0.3), pool=pool)
    assert time.perf_counter() - started < 5
    failure = info.value
    assert failure.error_class == "Timeout" and failure.retryable and "killed" in failure.message
    assert failure.page_count == 90
    assert gone(pid)
    out = await convert_local(MULTI, PDF, LOCAL, pool=pool)
    assert out.page_count == 5 and idle_pid(pool) != pid


async def test_memory_cap_kills_the_child_and_the_next_conversion_works(pool: ConverterPool, big_pdf: Path) -> None:
    baseline = pool._idle[0].ready["rss_mb"]
    cap = int(baseline) + 100  # converting the 90-page PDF peaks ~+320 MB
    tight = ConvertOptions(backend="local", memory_mb=cap)
    with pytest.raises(ConversionFailure) as info:
        await convert_local(big_pdf, PDF, tight, pool=pool)
    failure = info.value
    assert failure.error_class == "MemoryLimit" and failure.retryable
    assert f"{cap} MB cap" in failure.message
    assert not pool._idle  # the capped process was killed, not kept
    out = await convert_local(MULTI, PDF, LOCAL, pool=pool)
    assert out.page_count == 5


async def test_a_crashing_converter_does_not_take_the_caller_down(pool: ConverterPool, big_pdf: Path) -> None:
    pid = idle_pid(pool)
    task = asyncio.create_task(convert_local(big_pdf, PDF, LOCAL, pool=pool))
    await asyncio.sleep(0.8)
    os.kill(pid, signal.SIGSEGV)  # what a hostile file does to a C parser
    with pytest.raises(ConversionFailure) as info:
        await task
    assert info.value.error_class == "ConverterCrashed" and "SIGSEGV" in info.value.message
    out = await convert_local(MULTI, PDF, LOCAL, pool=pool)
    assert out.page_count == 5


async def test_cancelling_the_caller_kills_the_child(pool: ConverterPool, big_pdf: Path) -> None:
    pid = idle_pid(pool)
    task = asyncio.create_task(convert_local(big_pdf, PDF, LOCAL, pool=pool))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(wait_gone, pid)
    assert gone(pid)


async def test_default_pool_survives_many_documents() -> None:
    before = default_pool().started
    outs = await asyncio.gather(*(convert(p) for p in sorted((CORPUS / "html").iterdir())[:8]))
    assert all(o.markdown for o in outs)
    assert default_pool().started - before <= default_pool().size


def test_bad_alloc_pages_are_a_memory_failure_not_a_short_document() -> None:
    # Seen under RLIMIT_AS = 1 GB: docling-parse fails page by page and Docling says PARTIAL_SUCCESS
    # with 3 of 18 pages. That must be MemoryLimit (retried in slices), never a truncated success.
    from app.convert.engine import memory_exhausted

    seen = "Page failed to parse: Error rendering page 10 of key=2f6b…: std::bad_alloc"
    assert memory_exhausted(["Page failed to parse: font missing", seen])
    assert not memory_exhausted(["Page failed to parse: page references /Resources/Font/TT6 11 0 R"])


async def test_a_child_that_died_while_idle_is_replaced(pool: ConverterPool) -> None:
    pid = idle_pid(pool)
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(wait_gone, pid)
    out = await convert_local(MULTI, PDF, LOCAL, pool=pool)
    assert out.page_count == 5 and idle_pid(pool) != pid and pool.started == 2


WORKER = """
import asyncio, sys
from pathlib import Path
from app.convert.local import convert_local, default_pool
from app.convert.options import ConvertOptions

async def main() -> None:
    pool = default_pool()
    pool.warm()
    print(pool._idle[0].pid, flush=True)
    await convert_local(Path(sys.argv[1]), "application/pdf", ConvertOptions(backend="local"))
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_killing_the_worker_kills_its_converters(tmp_path: Path, big_pdf: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(big_pdf),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    child_pid = int(line)
    await asyncio.sleep(0.3)  # mid-conversion
    proc.kill()
    await proc.wait()
    await asyncio.to_thread(wait_gone, child_pid, 1.0)  # it would need ~3 s more to finish
    assert gone(child_pid), "the converter outlived its worker"


def test_shutdown_reaps_the_fork_server_so_its_cpu_time_is_counted() -> None:
    """Unreaped, the fork server (Docling's imports, the converter processes it reaped) is an orphan
    whose CPU-seconds no ancestor's getrusage(RUSAGE_CHILDREN) sees: bench compare under-counted
    Chronos's CPU by ~20 s of ~108."""
    import subprocess
    import sys

    probe = (
        "import os, resource\n"
        "import multiprocessing.forkserver as fs\n"
        "from app.convert.local import default_pool, shutdown\n"
        "default_pool().warm()\n"
        "pid = fs._forkserver._forkserver_pid\n"
        "def cpu():\n"
        "    u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "    return u.ru_utime + u.ru_stime\n"
        "before = cpu()\n"
        "stopped = shutdown()\n"
        "print(stopped, round(cpu() - before, 2), os.path.exists(f'/proc/{pid}'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    stopped, cpu_s, alive = done.stdout.strip().splitlines()[-1].split()
    assert stopped == "True" and alive == "False", done.stdout + done.stderr
    assert float(cpu_s) > 0.5, done.stdout  # importing Docling and torch alone takes seconds of CPU
