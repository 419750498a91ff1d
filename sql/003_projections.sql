-- Projections of the event log (rebuilt by `chronos replay`). Public names: documents, chunks,
-- vectors, cost_ledger (see ARCHITECTURE.md). Owned by projections/; columns may grow.

CREATE TABLE documents (
    document_id     uuid PRIMARY KEY,
    filename        text        NOT NULL,
    media_type      text,
    size            bigint,
    sha256          text,
    source          text,
    source_ref      text,
    status          text        NOT NULL,  -- uploaded, converting, converted, chunked, embedding, searchable, failed, deleted
    current_stage   text,
    page_count      integer,
    chunk_count     integer,
    backend         text,
    pipeline        text,
    docling_version text,
    conversion_id   uuid,
    chunk_set_id    uuid,
    embedding_model text,
    last_error      text,
    error_class     text,
    total_cost_usd  numeric(14, 6) NOT NULL DEFAULT 0,
    uploaded_at     timestamptz,
    converted_at    timestamptz,
    chunked_at      timestamptz,
    embedded_at     timestamptz,
    failed_at       timestamptz,
    deleted_at      timestamptz,
    updated_at      timestamptz,
    last_position   bigint      NOT NULL
);
CREATE INDEX documents_status_idx ON documents (status);

CREATE TABLE chunks (
    chunk_id      uuid PRIMARY KEY,
    document_id   uuid    NOT NULL,
    chunk_set_id  uuid    NOT NULL,
    ordinal       integer NOT NULL,
    text          text    NOT NULL,
    text_sha256   text    NOT NULL,
    pages         integer[] NOT NULL DEFAULT '{}',
    heading_path  text[]  NOT NULL DEFAULT '{}',
    char_start    integer,
    char_end      integer,
    token_count   integer,
    UNIQUE (chunk_set_id, ordinal)
);
CREATE INDEX chunks_document_idx ON chunks (document_id);

CREATE TABLE vectors (
    chunk_id    uuid   NOT NULL,
    model       text   NOT NULL,
    document_id uuid   NOT NULL,
    embedding   vector NOT NULL,
    PRIMARY KEY (chunk_id, model)
);
CREATE INDEX vectors_document_idx ON vectors (document_id);
-- One HNSW index per model (expression + partial), created when a model first appears:
--   CREATE INDEX ... ON vectors USING hnsw ((embedding::vector(384)) vector_cosine_ops)
--   WHERE model = 'local:all-MiniLM-L6-v2';

CREATE TABLE cost_ledger (
    position       bigint PRIMARY KEY,  -- position of the CostIncurred event
    event_id       uuid   NOT NULL UNIQUE,
    document_id    uuid,
    stage          text   NOT NULL,
    provider       text   NOT NULL,
    resource       text   NOT NULL,
    quantity       double precision NOT NULL,
    unit_price_usd double precision NOT NULL,
    amount_usd     numeric(14, 8) NOT NULL,
    caused_by      uuid,
    recorded_at    timestamptz NOT NULL
);
CREATE INDEX cost_ledger_document_idx ON cost_ledger (document_id);
CREATE INDEX cost_ledger_recorded_idx ON cost_ledger (recorded_at);

-- Embeddings already made, by (model, dimensions, sha256 of the text): re-chunking a document pays
-- only for text that changed. Filled from every ChunksEmbedded event (and its vectors blob).
CREATE TABLE embedding_cache (
    model       text    NOT NULL,
    dimensions  integer NOT NULL,
    text_sha256 text    NOT NULL,
    embedding   vector  NOT NULL,
    PRIMARY KEY (model, dimensions, text_sha256)
);
