"""What the converter fork server imports before it forks a converter process (``local.py``).

Docling and torch, then ``gc.freeze()``: every object the imports made moves to the collector's
permanent generation, so a converter's collections never write to them and the pages holding them
stay shared with the fork server instead of being copied into each converter (the pattern the
``gc.freeze`` documentation gives for fork without exec). Figures in ``docs/benchmarks.md``
(footprint).
"""

from __future__ import annotations

import gc

import app.convert.engine  # noqa: F401  (Docling and torch: seconds to import, done once here)

gc.collect()
gc.freeze()
