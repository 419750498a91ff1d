"""What keeps the worker's and the converters' memory down (issue 16.1, docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from app import malloc
from app.pipeline.warmup import WARM_UP_DOCUMENT


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_chunker_warm_up_leaves_docling_core_and_pandas_out_of_the_worker() -> None:
    out = _run(
        "import sys; from app.pipeline.warmup import warm_chunker; warm_chunker(); "
        "print(','.join(m for m in ('docling_core', 'pandas', 'docling') if m in sys.modules))"
    )
    assert out == "", f"the worker's warm-up imported {out}"


def test_the_warm_up_document_is_a_docling_document_with_pages() -> None:
    from docling_core.types.doc import DoclingDocument

    from app.chunking import _items_with_pages

    document = DoclingDocument.model_validate(WARM_UP_DOCUMENT)
    assert [t.text for t in document.texts] == ["Warm-up", WARM_UP_DOCUMENT["texts"][1]["text"]]  # type: ignore[index]
    # the same walk the chunker does on a converted document, so the warm-up pays its first costs
    assert [pages for _, pages in _items_with_pages(orjson.dumps(WARM_UP_DOCUMENT))] == [(1,), (1,)]


def test_the_fork_server_preload_freezes_what_docling_imported() -> None:
    out = _run("import gc; import app.convert.preload; print(gc.get_freeze_count())")
    assert int(out) > 100_000  # Docling and torch make ~10^5-10^6 tracked objects; all frozen


def test_tune_sets_the_allocator_unless_the_environment_does() -> None:
    applied = _run("from app import malloc; print(sorted(malloc.tune()))")
    if malloc._libc() is None:
        assert applied == "[]"
        return
    assert applied == str(sorted(["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]))
    env_code = (
        "import os; os.environ['MALLOC_ARENA_MAX'] = '4'; os.environ['CHRONOS_MALLOC_TUNING'] = 'on'; "
        "from app import malloc; print(sorted(malloc.tune()))"
    )
    assert _run(env_code) == str(sorted(["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]))
    off = "import os; os.environ['CHRONOS_MALLOC_TUNING'] = 'off'; from app import malloc; print(malloc.tune())"
    assert _run(off) == "{}"


def test_a_large_freed_block_goes_back_to_the_os_once_tuned() -> None:
    """With glibc's dynamic threshold, a 64 MB block freed after an mmapped one of that size is served
    from the heap next time and stays resident after free; tuned, it is mmapped and returned."""
    code = """
import ctypes, ctypes.util, sys
from app import malloc
if sys.argv[-1] == 'tuned':
    malloc.tune()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 // 2**20
size = 8 * 2**20
for _ in range(2):  # the first free raises the dynamic threshold, the second block comes from the heap
    blocks = [libc.malloc(size) for _ in range(8)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    for b in reversed(blocks[:-1]):
        libc.free(b)
    keep = blocks[-1]
print(rss())
"""
    if malloc._libc() is None:
        return
    default = int(subprocess.run([sys.executable, "-c", code, "default"], capture_output=True, text=True,
                                 check=True).stdout)  # fmt: skip
    tuned = int(subprocess.run([sys.executable, "-c", code, "tuned"], capture_output=True, text=True,
                               check=True).stdout)  # fmt: skip
    assert tuned + 40 < default, (tuned, default)
