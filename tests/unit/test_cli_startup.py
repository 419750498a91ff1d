"""The command line starts fast: building its parser (every `chronos` run does) imports no heavy
library. The OpenAI SDK alone took 3.8 s of a 6.5 s start-up on a loaded two-core machine, paid by
`chronos search` and every other command through `chronos batches`' module-level import."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("openai", "torch", "transformers", "sentence_transformers", "docling", "llama_index", "modal", "tiktoken")


def test_building_the_parser_imports_no_heavy_library() -> None:
    probe = (
        "import sys\n"
        "from app.cli import build_parser\n"
        "build_parser()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "", f"building the CLI's parser imported: {out.stdout.strip()}"
