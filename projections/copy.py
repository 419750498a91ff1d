"""PostgreSQL binary COPY streams built with numpy: one vectorised pass per event instead of
encoding every vector in Python (the vectors and embedding_cache tables are the bulk of a replay).

Binary COPY: an 11-byte signature, flags, header extension; per tuple an int16 field count and
for each field an int32 length and the value in the type's binary (send/recv) format: uuid is its
16 bytes, text its UTF-8 bytes, integer a big-endian int32, pgvector's vector an int16 dimension
count, an unused int16 and big-endian float4 values. A trailer of int16 -1 ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)


def encode_rows(n: int, fields: Sequence[tuple[str, object]]) -> bytes:
    """Encode ``n`` tuples. Each field is (kind, value): kind ``uuid`` (sequence of n UUIDs),
    ``text`` (one str repeated, or a sequence of n equal-length ASCII strs), ``int4`` / ``int8`` (one
    int repeated, or n of them) or ``vector`` (float array of shape (n, d))."""
    dtype: list[tuple[Any, ...]] = [("count", ">i2")]
    values: dict[str, object] = {"count": len(fields)}
    for i, (kind, value) in enumerate(fields):
        length_name, name = f"l{i}", f"f{i}"
        if kind == "uuid":
            ids = value
            assert isinstance(ids, Sequence)
            buf = np.frombuffer(b"".join(u.bytes for u in ids), dtype="V16")
            dtype += [(length_name, ">i4"), (name, "V16")]
            values[length_name], values[name] = 16, buf
        elif kind == "text":
            if isinstance(value, str):
                raw = value.encode()
                dtype += [(length_name, ">i4"), (name, f"S{len(raw)}")]
                values[length_name], values[name] = len(raw), raw
            else:
                assert isinstance(value, Sequence)
                texts = [str(v).encode() for v in value]
                width = len(texts[0]) if texts else 0
                if any(len(t) != width for t in texts):
                    raise ValueError("text columns encoded in bulk must have equal lengths (e.g. hex digests)")
                dtype += [(length_name, ">i4"), (name, f"S{width}")]
                values[length_name], values[name] = width, np.array(texts, dtype=f"S{width}")
        elif kind == "int4":
            dtype += [(length_name, ">i4"), (name, ">i4")]
            values[length_name], values[name] = 4, value
        elif kind == "int8":
            dtype += [(length_name, ">i4"), (name, ">i8")]
            values[length_name], values[name] = 8, value
        elif kind == "vector":
            matrix = np.asarray(value, dtype=np.float32)
            d = matrix.shape[1]
            dtype += [(length_name, ">i4"), (f"{name}d", ">u2"), (f"{name}u", ">u2"), (name, ">f4", (d,))]
            values[length_name], values[f"{name}d"], values[f"{name}u"] = 4 + 4 * d, d, 0
            values[name] = matrix
        else:
            raise ValueError(f"unknown field kind {kind!r}")
    out = np.empty(n, dtype=np.dtype(dtype))  # type: ignore[call-overload, unused-ignore]
    for key, value in values.items():
        out[key] = value
    return out.tobytes()


async def stream(bodies: Sequence[bytes]) -> AsyncIterator[bytes]:
    """The COPY data for ``copy_to_table(source=...)``: header, the encoded tuples, trailer."""
    yield HEADER
    for body in bodies:
        yield body
    yield TRAILER
