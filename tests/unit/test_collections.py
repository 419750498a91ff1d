"""Collections and metadata rules (app/catalogue/collections.py) and the ids that put a document in a
collection (app/catalogue/ids.py)."""

from __future__ import annotations

import uuid

import pytest

from app.catalogue import ids
from app.catalogue.collections import (
    MAX_METADATA_BYTES,
    InvalidMetadata,
    apply_metadata,
    parse_metadata,
    parse_pairs,
    validate_collection_name,
    validate_metadata,
)
from events.errors import InvalidRequest

SHA = "ab" * 32


def test_default_collection_keeps_the_ids_documents_had_before_collections() -> None:
    assert ids.document_id_for_content(SHA) == uuid.uuid5(ids.DOCUMENT_NAMESPACE, SHA)
    assert ids.document_id_for_content(SHA, "default") == uuid.uuid5(ids.DOCUMENT_NAMESPACE, SHA)
    assert ids.document_id_for_key("directus:1") == uuid.uuid5(ids.DOCUMENT_NAMESPACE, "key:directus:1")


def test_the_same_bytes_or_key_in_two_collections_are_two_documents() -> None:
    assert ids.document_id_for_content(SHA, "finance") != ids.document_id_for_content(SHA)
    assert ids.document_id_for_content(SHA, "finance") != ids.document_id_for_content(SHA, "hr")
    assert ids.document_id_for_content(SHA, "hr") == ids.document_id_for_content(SHA, "hr")
    assert ids.document_id_for_key("k", "finance") != ids.document_id_for_key("k")
    assert ids.document_id_for_key("k", "finance") != ids.document_id_for_content("k", "finance")
    assert ids.collection_stream("hr") == "collection-hr"


@pytest.mark.parametrize("name", ["default", "hr", "0", "finance-2026", "a_b", "a" * 63])
def test_valid_collection_names(name: str) -> None:
    assert validate_collection_name(name) == name


@pytest.mark.parametrize("name", ["", "HR", "-hr", "_x", "a b", "a/b", "a" * 64, "é", None, 5])
def test_invalid_collection_names_are_refused_with_the_rule(name: object) -> None:
    with pytest.raises(InvalidRequest, match="lowercase letter or digit"):
        validate_collection_name(name)


def test_metadata_must_be_a_bounded_json_object_of_string_keys() -> None:
    assert validate_metadata({"dept": "finance", "tags": ["a"], "n": 1.5, "ok": True, "x": None}) is not None
    cases: list[tuple[object, str]] = [
        (["a"], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({1: "a"}, "not a string"),
        ({"": "a"}, "keys have 1..128"),
        ({"a": {"b": {"c": {"d": {"e": 1}}}}}, "nests deeper than 5"),
        ({"a": "x" * MAX_METADATA_BYTES}, "the limit is 16384 bytes"),
        ({"a": float("nan")}, "JSON cannot hold"),
        ({"a": object()}, "metadata values are JSON"),
    ]
    for value, message in cases:
        with pytest.raises(InvalidMetadata, match=message):
            validate_metadata(value)
    assert InvalidMetadata.http_status == 422


def test_metadata_from_text_and_pairs() -> None:
    assert parse_metadata('{"dept": "hr", "year": 2026}') == {"dept": "hr", "year": 2026}
    with pytest.raises(InvalidMetadata, match="not valid JSON"):
        parse_metadata("{dept: hr}")
    with pytest.raises(InvalidMetadata, match="must be a JSON object"):
        parse_metadata("[1, 2]")
    assert parse_pairs(["dept=finance", "version=1.10", "empty=", "eq=a=b"]) == {
        "dept": "finance", "version": "1.10", "empty": "", "eq": "a=b",
    }  # fmt: skip
    with pytest.raises(InvalidMetadata, match="is not KEY=VALUE"):
        parse_pairs(["dept"])


def test_merge_replaces_top_level_keys_and_null_removes_one_replace_takes_the_object() -> None:
    current = {"dept": "hr", "tags": ["a"], "year": "2025"}
    assert apply_metadata(current, {"tags": ["b"], "year": None, "new": 1}, "merge") == {
        "dept": "hr", "tags": ["b"], "new": 1,
    }  # fmt: skip
    assert apply_metadata(current, {"only": "this"}, "replace") == {"only": "this"}
    assert current == {"dept": "hr", "tags": ["a"], "year": "2025"}  # never changed in place
