-- ChunksEmbedded events the vectors projector could not apply (a vectors blob of the wrong shape, NaN
-- values, a dimension that differs from the model's). Written in the projector's own transaction, so
-- replay rebuilds it; `chronos check` reports every row as an error. The document keeps its earlier
-- vectors: a set is replaced only by one that can be applied.
CREATE TABLE vector_problems (
    event_id     uuid PRIMARY KEY,
    position     bigint NOT NULL,
    document_id  uuid   NOT NULL,
    model        text   NOT NULL,
    chunk_set_id uuid,
    problem      text   NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vector_problems_document_id_idx ON vector_problems (document_id);
