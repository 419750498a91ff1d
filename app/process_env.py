"""The environment handed to processes that need none of the service's secrets.

The embedded PostgreSQL and the local Docling converter processes (which parse untrusted files)
inherited the whole environment: ``OPENAI_API_KEY``, ``CHRONOS_API_TOKENS``, ``DIRECTUS_TOKEN``,
``MODAL_TOKEN_*``, ``DATABASE_URL`` ... readable from ``/proc/<pid>/environ`` and by
``pg_read_file('/proc/self/environ')``. They now get an allow-list: the few names below (locale,
paths, thread settings, what Docling and torch read), never a name that looks like a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

# Every process: how to find programs and temporary space, who it runs as, the locale and time zone.
BASE_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TMP",
        "TEMP",
        "LD_LIBRARY_PATH",
    }
)
BASE_PREFIXES = ("LC_",)

# Converter processes: the interpreter's own settings, Docling's models, Hugging Face offline mode,
# torch / BLAS thread counts and devices.
CONVERTER_NAMES = frozenset({"VIRTUAL_ENV", "TOKENIZERS_PARALLELISM", "KMP_AFFINITY", "KMP_BLOCKTIME"})
CONVERTER_PREFIXES = (
    "PYTHON",
    "DOCLING_",
    "HF_",
    "TRANSFORMERS_",
    "TORCH_",
    "PYTORCH_",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "NUMEXPR_",
    "CUDA_",
    "NVIDIA_",
    "ONNXRUNTIME_",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
)

# Never passed on, whatever prefix allowed it: a name with one of these words is a credential or
# carries one (HF_TOKEN, DOCLING_..._API_KEY, a URL with user:password).
_SECRET_WORD = re.compile(
    r"(?:^|_)(?:TOKENS?|KEYS?|SECRETS?|PASSWORDS?|PASSWD|PASSPHRASE|PASS|CREDENTIALS?|AUTH|COOKIES?|DSN|URLS?|URI)"
    r"(?:_|$)"
)


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (checked on the upper-cased name)."""
    return bool(_SECRET_WORD.search(name.upper()))


def _allowed(name: str, names: Iterable[str], prefixes: tuple[str, ...]) -> bool:
    return (name in names or name.startswith(prefixes)) and not looks_secret(name)


def postgres_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``initdb``, ``pg_ctl`` and the postmaster (and so every backend)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if _allowed(k, BASE_NAMES, BASE_PREFIXES)}


def converter_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the converter fork server and every converter process forked from it."""
    env = os.environ if environ is None else environ
    names = BASE_NAMES | CONVERTER_NAMES
    prefixes = BASE_PREFIXES + CONVERTER_PREFIXES
    return {k: v for k, v in env.items() if _allowed(k, names, prefixes)}
