"""The event catalogue: every type round-trips through the codec, old payloads decode, bad ones are
refused loudly, unknown types are left alone."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest

from app.catalogue import events as ev
from app.catalogue.codec import InvalidEvent, UnknownEvent, decode, new_event, payload
from events.types import RecordedEvent

DOC = str(uuid.uuid4())
BLOB = ev.BlobRef(sha256="a" * 64, size=3, media_type="text/plain")


def sample(cls: type[ev.Event]) -> ev.Event:
    """One instance of every event type with every field set to something other than its default."""
    common: dict[str, Any] = {"document_id": DOC} if issubclass(cls, ev.DocumentEvent) or cls is ev.CostIncurred else {}
    failed = {"stage": "convert", "error_class": "Timeout", "message": "too slow", "attempt": 2, "retryable": True,
              "final": False, "backend": "local", "fallback": ev.Fallback(from_backend="modal", reason="timeout",
              message="m"), "attempts": ["local whole document: Timeout"], "page_count": 7}  # fmt: skip
    values: dict[type[ev.Event], dict[str, Any]] = {
        ev.DocumentUploaded: {"filename": "a.pdf", "media_type": "application/pdf", "size": 3, "sha256": "a" * 64,
                              "blob": BLOB, "source": "api", "source_ref": "ref", "declared_media_type": "x/y",
                              "collection": "finance", "metadata": {"dept": "finance", "tags": ["q1", "q2"]}},
        ev.DocumentMetadataUpdated: {"metadata": {"dept": "hr", "gone": None}, "mode": "replace"},
        ev.CollectionCreated: {"name": "finance", "description": "Finance team", "monthly_budget_usd": 12.5},
        ev.CollectionBudgetSet: {"name": "finance", "monthly_budget_usd": 20.0},
        ev.DocumentDeleted: {"reason": "gone"},
        ev.ConversionRequested: {"request_id": "r", "backend": "modal", "pipeline": "standard", "reason": "why"},
        ev.ChunkingRequested: {"request_id": "r", "chunk_size": 64, "chunk_overlap": 8, "reason": "why"},
        ev.EmbeddingRequested: {"request_id": "r", "model": "local:m", "reason": "why", "scope": "all",
                                "batch_id": "b"},
        ev.DocumentConverted: {"conversion_id": "c", "input_sha256": "b" * 64, "backend": "modal", "pipeline": "x",
                               "docling_version": "2", "page_count": 2,
                               "durations": ev.Durations(total_s=1.0, convert_s=0.5, queue_s=0.1),
                               "docling_json": BLOB, "markdown": BLOB, "settings_hash": "h",
                               "fallback": ev.Fallback(from_backend="modal", reason="error", message="m"),
                               "reused_from": "c0", "slices": [[1, 2]], "gpu": "L4"},
        ev.DocumentChunked: {"chunk_set_id": "s", "conversion_id": "c",
                             "parameters": ev.ChunkParameters(splitter="x", chunk_size=64, chunk_overlap=8,
                                                              requested_chunk_size=64, tokenizer="t",
                                                              embedder_max_tokens=256),
                             "chunks": [ev.Chunk(ordinal=0, text="t", text_sha256="h", pages=[1], heading_path=["H"],
                                                 char_start=0, char_end=1, token_count=1)]},
        ev.ChunkingUnchanged: {"chunk_set_id": "s", "conversion_id": "c", "request_id": "r"},
        ev.ChunksEmbedded: {"chunk_set_id": "s", "model": "local:m", "provider": "local", "dimensions": 4,
                            "vectors": BLOB, "chunk_count": 1, "reused_count": 1, "tokens": 5},
        ev.EmbeddingsCached: {"chunk_set_id": "s", "model": "openai:m", "provider": "openai", "dimensions": 4,
                              "vectors": BLOB, "text_sha256": ["h"], "tokens": 5, "reason": "a later request failed",
                              "revision": 2},
        ev.ConversionFailed: failed,
        ev.ChunkingFailed: {**failed, "stage": "chunk"},
        ev.EmbeddingFailed: {**failed, "stage": "embed"},
        ev.ApiTokenCreated: {"token_id": "t", "name": "n", "scope": "write", "token_sha256": "h",
                             "collections": ["finance"]},
        ev.ApiTokenRevoked: {"token_id": "t", "reason": "left"},
        ev.SourceSynced: {"source": "directus", "high_water": "2026-01-01T00:00:00.000Z", "uploaded": 2, "unchanged": 1,
                          "deleted": 0, "rejected": 1},
        ev.EmbeddingBatchSubmitted: {"batch_id": "b", "openai_batch_id": "batch_1", "input_file_id": "file_1",
                                     "input": BLOB, "model": "openai:m", "dimensions": 4,
                                     "documents": [ev.EmbeddingBatchDocument(document_id=DOC, chunk_set_id="s",
                                                                             request_id="r", custom_ids=[f"{DOC}:0"],
                                                                             revision=2)],
                                     "requests": 1, "inputs": 2, "estimated_tokens": 9, "scope": "all"},
        ev.EmbeddingBatchFinished: {"batch_id": "b", "openai_batch_id": "batch_1", "status": "expired",
                                    "output": BLOB, "errors": BLOB, "embedded_documents": [DOC],
                                    "incomplete_documents": {DOC: "expired"}, "tokens": 9, "amount_usd": 1e-7},
        ev.BudgetThresholdCrossed: {"month": "2026-12", "threshold_pct": 80, "spent_usd": 40.5, "budget_usd": 50.0,
                                    "message": "80 % of the budget"},
        ev.BudgetAlertDelivered: {"alert_event_id": "a", "month": "2026-12", "threshold_pct": 100,
                                  "webhook": "https://hooks.example", "attempts": 2, "status_code": 200},
        ev.BudgetAlertDeliveryFailed: {"alert_event_id": "a", "month": "2026-12", "threshold_pct": 80,
                                       "webhook": "https://hooks.example", "attempts": 5, "error": "HTTP 503",
                                       "status_code": 503},
        ev.CostIncurred: {"stage": "embed", "provider": "openai", "resource": "tokens", "quantity": 5.0,
                          "unit_price_usd": 2e-8, "amount_usd": 1e-7, "caused_by": "e", "details": {"k": 1}},
    }  # fmt: skip
    return cls(**common, **values[cls])


def recorded(event_type: str, data: dict[str, Any], version: int = 1) -> RecordedEvent:
    return RecordedEvent(
        position=1, tx_id=1, event_id=uuid.uuid4(), stream_id=f"document-{DOC}", stream_version=1,
        type=event_type, schema_version=version, data=data, metadata={}, recorded_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def test_catalogue_lists_every_event_class() -> None:
    concrete = {c for c in _subclasses(ev.Event) if getattr(c, "TYPE", "")}
    assert concrete == set(ev.ALL)
    assert len(ev.BY_TYPE) == len(ev.ALL)


@pytest.mark.parametrize("cls", ev.ALL, ids=lambda c: c.TYPE)
def test_every_event_type_round_trips(cls: type[ev.Event]) -> None:
    event = sample(cls)
    stored = new_event(event, {"actor": "test"})
    assert (stored.type, stored.schema_version) == (cls.TYPE, cls.VERSION)
    back = decode(recorded(stored.type, dict(stored.data), stored.schema_version))
    assert back == event
    assert payload(back) == stored.data


def test_optional_fields_take_their_defaults_and_unknown_fields_are_ignored() -> None:
    data = {"document_id": DOC, "filename": "a.md", "media_type": "text/markdown", "size": 1, "sha256": "s",
            "blob": {"sha256": "s", "size": 1}, "source": "cli", "added_by_a_newer_writer": 1}  # fmt: skip
    event = decode(recorded("DocumentUploaded", data))
    assert isinstance(event, ev.DocumentUploaded)
    assert event.source_ref is None and event.blob.media_type is None


def test_uploads_written_before_collections_decode_into_default_with_no_metadata() -> None:
    """A DocumentUploaded stored before issue 15 has neither field: it is in ``default`` with ``{}``, and a
    metadata update without a mode merges."""
    data = {"document_id": DOC, "filename": "a.md", "media_type": "text/markdown", "size": 1, "sha256": "s",
            "blob": {"sha256": "s", "size": 1}, "source": "cli", "key": "api:x", "revision": 2}  # fmt: skip
    event = decode(recorded("DocumentUploaded", data))
    assert isinstance(event, ev.DocumentUploaded)
    assert (event.collection, event.metadata, event.revision) == ("default", {}, 2)
    update = decode(recorded("DocumentMetadataUpdated", {"document_id": DOC, "metadata": {"a": 1}}))
    assert isinstance(update, ev.DocumentMetadataUpdated) and update.mode == "merge"
    created = decode(recorded("CollectionCreated", {"name": "hr"}))
    assert isinstance(created, ev.CollectionCreated)
    assert (created.description, created.monthly_budget_usd) == ("", None)
    with pytest.raises(InvalidEvent, match="DocumentMetadataUpdated"):
        decode(recorded("DocumentMetadataUpdated", {"document_id": DOC, "metadata": {}, "mode": "upsert"}))


def test_a_payload_that_does_not_match_its_type_is_refused_with_the_event_named() -> None:
    bad = recorded("ChunksEmbedded", {"document_id": DOC, "chunk_set_id": "s", "model": 5})
    with pytest.raises(InvalidEvent, match=f"event {bad.event_id} at position 1: ChunksEmbedded v1"):
        decode(bad)


def test_a_newer_version_than_this_code_knows_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="written by a newer Chronos"):
        decode(recorded("DocumentDeleted", {"document_id": DOC}, version=99))


def test_unknown_types_are_left_to_whoever_knows_them() -> None:
    event = decode(recorded("SomethingElse", {"x": 1}))
    assert isinstance(event, UnknownEvent) and event.type == "SomethingElse"


def test_payloads_are_plain_json() -> None:
    for cls in ev.ALL:
        assert msgspec.json.decode(msgspec.json.encode(payload(sample(cls)))) == payload(sample(cls))


def _subclasses(cls: type) -> set[type]:
    found: list[type] = list(cls.__subclasses__())
    return set(found).union(*(_subclasses(c) for c in found))


def test_a_v1_chunk_set_upcasts_to_v2_with_its_texts_inline() -> None:
    v1 = {"document_id": DOC, "chunk_set_id": "s", "conversion_id": "c",
          "parameters": {"splitter": "markdown+sentence", "chunk_size": 256, "chunk_overlap": 32,
                         "requested_chunk_size": 512, "tokenizer": "t", "embedder_max_tokens": 256},
          "chunks": [{"ordinal": 0, "text": "Hello.", "text_sha256": "h", "pages": [1], "heading_path": ["H"],
                      "char_start": 0, "char_end": 6, "token_count": 3}]}  # fmt: skip
    event = decode(recorded("DocumentChunked", v1, version=1))
    assert isinstance(event, ev.DocumentChunked) and event.content is None
    assert event.chunks[0].text == "Hello." and event.chunks[0].heading_path == ["H"]
    assert ev.DocumentChunked.VERSION == 2
