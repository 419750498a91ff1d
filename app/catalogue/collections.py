"""Collections and metadata: the naming rule, the metadata limits and how an update applies, in one place
(docs/collections.md). Pure: the reducer (``state``), the index projection and every entry point (CLI,
API, Directus) call these, so a rule is never checked two ways.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from events.errors import InvalidRequest, NotFound

DEFAULT = "default"
NAME_RULE = "a lowercase letter or digit, then up to 62 lowercase letters, digits, '_' or '-'"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

MAX_METADATA_BYTES = 16 * 1024  # the object as compact JSON (UTF-8)
MAX_METADATA_DEPTH = 5  # the object itself is depth 1: {"a": {"b": [1]}} is 3
MAX_KEY_CHARS = 128


class InvalidMetadata(InvalidRequest):
    """The metadata is not a JSON object within the limits (docs/collections.md); nothing was stored."""

    code = "invalid_metadata"
    http_status = 422


class UnknownCollection(NotFound):
    """No such collection."""

    code = "collection_not_found"


def validate_collection_name(name: object) -> str:
    """``name`` if it is a valid collection name, else InvalidRequest naming the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest(f"collection name {name!r} is invalid: a collection name is {NAME_RULE}")
    return name


def unknown_collection(name: str) -> UnknownCollection:
    return UnknownCollection(
        f"collection {name!r} does not exist; create it first with `chronos collections create {name}` "
        "(or POST /collections), or upload into an existing one (`chronos collections list`)"
    )


def validate_metadata(value: object, *, what: str = "metadata") -> dict[str, Any]:
    """``value`` if it is a JSON object of string keys within the size and depth limits, else
    InvalidMetadata saying what is wrong."""
    if not isinstance(value, Mapping):
        raise InvalidMetadata(f'{what} must be a JSON object (e.g. {{"dept": "finance"}}), not {_kind(value)}')
    _check(value, what, 1)
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise InvalidMetadata(f"{what} holds a value that is not JSON: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadata(f"{what} is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES} bytes")
    return dict(value)


def _check(value: object, path: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidMetadata(f"{path} nests deeper than {MAX_METADATA_DEPTH} levels (objects and lists)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMetadata(f"{path} has a key {key!r} that is not a string")
            if not key or len(key) > MAX_KEY_CHARS:
                raise InvalidMetadata(f"{path} has a key of {len(key)} characters; keys have 1..{MAX_KEY_CHARS}")
            _check(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidMetadata(f"{path} is {value!r}, which JSON cannot hold")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise InvalidMetadata(f"{path} is {_kind(value)}; metadata values are JSON (text, numbers, true/false, null)")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def parse_metadata(text: str, *, what: str = "metadata") -> dict[str, Any]:
    """A JSON object given as text (a form field, a query parameter, ``--meta-json``)."""
    if len(text.encode()) > 4 * MAX_METADATA_BYTES:
        raise InvalidMetadata(f"{what} is {len(text.encode())} bytes; the limit is {MAX_METADATA_BYTES} bytes")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidMetadata(f"{what} is not valid JSON: {exc}") from None
    return validate_metadata(value, what=what)


def parse_pairs(pairs: list[str], *, what: str = "--meta") -> dict[str, Any]:
    """``k=v`` pairs (``chronos ingest --meta``, ``chronos documents meta``). Values are always text
    (``version=1.10`` stays "1.10"): numbers, lists or null are given as JSON (``--meta-json``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidMetadata(f"{what} {pair!r} is not KEY=VALUE (e.g. {what} dept=finance)")
        out[key.strip()] = value
    return validate_metadata(out, what=what)


def apply_metadata(current: Mapping[str, Any], update: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The metadata after an update. ``replace``: ``update`` is the whole object; ``merge``: its top-level
    keys replace the current ones, and a key given as null is removed (RFC 7386, one level)."""
    if mode == "replace":
        return {k: v for k, v in update.items()}
    out = dict(current)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
