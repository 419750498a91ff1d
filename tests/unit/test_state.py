"""The one reducer: where a document stands after each kind of event, including the cases the four
earlier copies disagreed about."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from app.catalogue import events as ev
from app.catalogue.codec import new_event
from app.catalogue.state import DocumentState, Status, evolve
from events.types import RecordedEvent

DOC = str(uuid.uuid4())
BLOB = ev.BlobRef(sha256="a" * 64, size=3)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Stream:
    def __init__(self) -> None:
        self.state: DocumentState | None = None
        self.version = 0

    def add(self, event: ev.Event) -> DocumentState:
        self.version += 1
        stored = new_event(event, {})
        rec = RecordedEvent(
            position=self.version, tx_id=1, event_id=stored.event_id, stream_id=f"document-{DOC}",
            stream_version=self.version, type=stored.type, schema_version=stored.schema_version,
            data=dict(stored.data), metadata={}, recorded_at=T0 + dt.timedelta(seconds=self.version),
        )  # fmt: skip
        self.state = evolve(self.state, event, rec)
        assert self.state is not None
        return self.state


def upload() -> ev.DocumentUploaded:
    return ev.DocumentUploaded(document_id=DOC, filename="a.md", media_type="text/markdown", size=3,
                               sha256="a" * 64, blob=BLOB, source="cli")  # fmt: skip


def converted(cid: str = "c1") -> ev.DocumentConverted:
    return ev.DocumentConverted(document_id=DOC, conversion_id=cid, input_sha256="a" * 64, backend="local",
                                pipeline="simple", docling_version="2", page_count=1,
                                durations=ev.Durations(total_s=1, convert_s=1), docling_json=BLOB, markdown=BLOB,
                                settings_hash="h")  # fmt: skip


def chunked(sid: str = "s1") -> ev.DocumentChunked:
    return ev.DocumentChunked(document_id=DOC, chunk_set_id=sid, conversion_id="c1",
                              parameters=ev.ChunkParameters(chunk_size=256),
                              chunks=[ev.Chunk(ordinal=0, text="t", text_sha256="h")])  # fmt: skip


def embedded(sid: str = "s1", model: str = "local:m") -> ev.ChunksEmbedded:
    return ev.ChunksEmbedded(document_id=DOC, chunk_set_id=sid, model=model, provider="local", dimensions=4,
                             vectors=BLOB, chunk_count=1)  # fmt: skip


def failed(cls: type[ev.StageFailed], final: bool, message: str = "boom") -> ev.StageFailed:
    return cls(document_id=DOC, stage=cls.STAGE, error_class="Boom", message=message, final=final)


def searchable() -> Stream:
    s = Stream()
    for e in (upload(), converted(), chunked(), embedded()):
        s.add(e)
    return s


def test_happy_path() -> None:
    s = Stream()
    assert s.add(upload()).status is Status.UPLOADED
    assert s.add(converted()).status is Status.CONVERTED
    assert s.add(chunked()).status is Status.CHUNKED
    state = s.add(embedded())
    assert state.status is Status.SEARCHABLE and state.final and state.serving_chunk_set_id == "s1"
    assert state.current_stage is None and state.embedding_model == "local:m"


def test_a_failed_reembedding_is_failed_while_search_keeps_the_old_vectors() -> None:
    s = searchable()
    s.add(ev.EmbeddingRequested(document_id=DOC, request_id="r", model="openai:text-embedding-3-small"))
    state = s.add(failed(ev.EmbeddingFailed, final=True))
    assert state.status is Status.FAILED and state.failed_stage == "embed" and state.failure == "Boom: boom"
    assert state.serving_chunk_set_id == "s1"  # search still answers from what it had


def test_a_non_final_failure_counts_the_attempt_only() -> None:
    s = Stream()
    s.add(upload())
    state = s.add(failed(ev.ConversionFailed, final=False))
    assert state.status is Status.UPLOADED and state.attempts == 1 and state.last_error == "boom"
    assert s.add(converted()).attempts == 0


def test_unchanged_rechunk_of_a_searchable_document_is_searchable_again() -> None:
    s = searchable()
    assert s.add(ev.ChunkingRequested(document_id=DOC, request_id="r")).status is Status.CHUNKING
    state = s.add(ev.ChunkingUnchanged(document_id=DOC, chunk_set_id="s1", conversion_id="c1"))
    assert state.status is Status.SEARCHABLE


def test_vectors_of_a_superseded_set_do_not_make_it_searchable() -> None:
    s = searchable()
    s.add(chunked("s2"))
    state = s.add(embedded("s1", "local:other"))
    assert state.status is Status.CHUNKED and state.serving_chunk_set_id == "s1"
    assert s.add(embedded("s2")).status is Status.SEARCHABLE


def test_a_request_after_a_failed_conversion_stays_blocked_by_it() -> None:
    s = Stream()
    s.add(upload())
    s.add(failed(ev.ConversionFailed, final=True))
    state = s.add(ev.ChunkingRequested(document_id=DOC, request_id="r"))
    assert state.status is Status.CHUNKING and state.blocked_before("chunk") and state.blocked_before("embed")
    assert not s.add(ev.ConversionRequested(document_id=DOC, request_id="r2")).blocked_before("chunk")


def test_delete_then_the_same_content_again_starts_over_in_the_same_stream() -> None:
    s = searchable()
    s.add(ev.CostIncurred(document_id=DOC, stage="embed", provider="local", resource="cpu_seconds", quantity=1,
                          unit_price_usd=0.5, amount_usd=0.5, caused_by="x"))  # fmt: skip
    deleted = s.add(ev.DocumentDeleted(document_id=DOC, reason="x"))
    assert deleted.status is Status.DELETED and deleted.serving_chunk_set_id is None
    assert s.add(converted("c2")).status is Status.DELETED  # stale results after a delete change nothing
    again = s.add(upload())
    assert again.status is Status.UPLOADED and again.conversion_id is None and again.deleted_at is None
    assert again.total_cost_usd == Decimal("0.5")  # what was spent stays spent


def test_the_state_survives_its_row() -> None:
    s = searchable()
    s.add(ev.ChunkingRequested(document_id=DOC, request_id="r", chunk_size=64, chunk_overlap=4))
    state = s.state
    assert state is not None
    assert DocumentState.from_row(state.row()) == state


def batch_request(model: str = "openai:new") -> ev.EmbeddingRequested:
    return ev.EmbeddingRequested(document_id=DOC, request_id="r-batch", model=model, scope="all", batch_id="b1")


def cached(model: str = "openai:new") -> ev.EmbeddingsCached:
    return ev.EmbeddingsCached(document_id=DOC, chunk_set_id="s1", model=model, provider="openai", dimensions=4,
                               vectors=BLOB, text_sha256=["h"], tokens=3, reason="a later request failed")  # fmt: skip


def test_a_document_is_embedding_while_a_batch_api_job_runs_and_searchable_when_it_is_recorded() -> None:
    s = searchable()
    during = s.add(batch_request())
    assert during.status is Status.EMBEDDING and not during.final and during.current_stage == "embed"
    assert during.model == "openai:new" and during.serving_chunk_set_id == "s1"  # search keeps answering
    after = s.add(embedded(model="openai:new"))
    assert after.status is Status.SEARCHABLE and after.embedding_model == "openai:new"
    assert after.is_embedded("s1", "local:m") and after.is_embedded("s1", "openai:new")


def test_an_ended_batch_without_every_text_fails_the_document_for_good_and_search_keeps_serving() -> None:
    s = searchable()
    s.add(batch_request())
    kept = s.add(cached())  # what the batch did (paid): no change in where the document stands
    assert kept.status is Status.EMBEDDING and kept.attempts == 0 and kept.last_error is None
    assert not kept.is_embedded("s1", "openai:new")
    incomplete = ev.EmbeddingFailed(
        document_id=DOC,
        stage="embed",
        error_class="BatchIncomplete",
        message="expired; finish with chronos reprocess",
        retryable=True,
        final=True,
    )
    state = s.add(incomplete)
    assert state.status is Status.FAILED and state.final and state.failed_stage == "embed"
    assert state.failure == "BatchIncomplete: expired; finish with chronos reprocess"
    assert state.serving_chunk_set_id == "s1" and state.is_embedded("s1", "local:m")
    again = s.add(ev.EmbeddingRequested(document_id=DOC, request_id="r2", model="openai:new"))
    assert again.status is Status.EMBEDDING and again.halted is None


def test_paid_vectors_before_a_failure_that_will_be_retried_only_count_the_attempt() -> None:
    s = searchable()
    s.add(ev.EmbeddingRequested(document_id=DOC, request_id="r", model="openai:new"))
    s.add(cached())
    state = s.add(failed(ev.EmbeddingFailed, final=False))
    assert state.status is Status.EMBEDDING and state.attempts == 1 and state.last_error == "boom"
