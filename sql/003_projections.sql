-- Projections of the event log, written by projections/ and rebuilt by `chronos replay`.
-- Public names: documents, chunks, vectors, cost_ledger (see ARCHITECTURE.md).
-- Every table here can be dropped and rebuilt from the log and the blob store alone. Index names
-- are PostgreSQL's defaults, so the shadow tables replay builds (CREATE TABLE ... LIKE) get the same ones.
--
-- Which projector owns which table (each projector is one subscription with its own checkpoint,
-- and only ever reads its own tables, so a projection is consistent with its checkpoint):
--   documents       documents
--   chunks          chunk_sets, chunks
--   vectors         vector_documents, vector_sets, embedding_models, vectors (+ one HNSW index per model)
--   cost_ledger     cost_ledger
--   embedding_cache embedding_cache

CREATE TABLE documents (
    document_id     uuid PRIMARY KEY,
    filename        text        NOT NULL,
    media_type      text,
    size            bigint,
    sha256          text,
    source          text,
    source_ref      text,
    -- uploaded, converting, converted, chunking, chunked, embedding, searchable | failed | deleted
    status          text        NOT NULL,
    current_stage   text,       -- the stage the document waits for or runs: convert, chunk, embed (NULL when final)
    page_count      integer,
    chunk_count     integer,
    backend         text,
    pipeline        text,
    docling_version text,
    conversion_id   uuid,
    chunk_set_id    uuid,
    chunk_size      integer,
    embedding_model text,
    attempts        integer     NOT NULL DEFAULT 0,  -- failed attempts of the current stage
    last_error      text,
    error_class     text,
    failed_stage    text,
    total_cost_usd  numeric(14, 8) NOT NULL DEFAULT 0,
    uploaded_at     timestamptz,
    requested_at    timestamptz,  -- latest reprocess request
    converted_at    timestamptz,
    chunked_at      timestamptz,
    embedded_at     timestamptz,
    failed_at       timestamptz,
    deleted_at      timestamptz,
    updated_at      timestamptz,
    stream_version  integer     NOT NULL,  -- last event of the document's stream applied (idempotence)
    last_position   bigint      NOT NULL
);
CREATE INDEX documents_status_idx ON documents (status);

-- The chunks projector's view of each document: its latest conversion and current chunk set.
CREATE TABLE chunk_sets (
    document_id    uuid PRIMARY KEY,
    chunk_set_id   uuid,
    conversion_id  uuid,
    parameters     jsonb,
    chunk_count    integer NOT NULL DEFAULT 0,
    deleted        boolean NOT NULL DEFAULT false,
    stream_version integer NOT NULL,
    position       bigint  NOT NULL
);

-- Chunks of every document's current chunk set (older sets stay in the log: v_chunk_set_history).
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
CREATE INDEX chunks_document_id_idx ON chunks (document_id);

-- The vectors projector's view of each document: current chunk set (vectors only ever belong to it).
CREATE TABLE vector_documents (
    document_id    uuid PRIMARY KEY,
    chunk_set_id   uuid,
    chunk_count    integer NOT NULL DEFAULT 0,
    deleted        boolean NOT NULL DEFAULT false,
    stream_version integer NOT NULL,
    position       bigint  NOT NULL
);

-- Which models have vectors for which document's current chunk set (search coverage).
CREATE TABLE vector_sets (
    document_id  uuid    NOT NULL,
    model        text    NOT NULL,
    chunk_set_id uuid    NOT NULL,
    dimensions   integer NOT NULL,
    vector_count integer NOT NULL,
    vectors_blob text    NOT NULL,
    position     bigint  NOT NULL,
    PRIMARY KEY (document_id, model)
);
CREATE INDEX vector_sets_model_idx ON vector_sets (model);

-- Every embedding model seen, with its HNSW index (created when the model first appears).
CREATE TABLE embedding_models (
    model          text PRIMARY KEY,
    dimensions     integer NOT NULL,
    index_name     text    NOT NULL,
    first_position bigint  NOT NULL
);

CREATE TABLE vectors (
    chunk_id    uuid   NOT NULL,
    model       text   NOT NULL,
    document_id uuid   NOT NULL,
    embedding   vector NOT NULL,
    PRIMARY KEY (chunk_id, model)
);
CREATE INDEX vectors_document_id_idx ON vectors (document_id);
-- One HNSW index per model (expression + partial), made by ensure_vector_index():
--   CREATE INDEX vectors_hnsw_<md5 of model> ON vectors USING hnsw ((embedding::vector(384)) vector_cosine_ops)
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
    details        jsonb,
    recorded_at    timestamptz NOT NULL
);
CREATE INDEX cost_ledger_document_id_idx ON cost_ledger (document_id);
CREATE INDEX cost_ledger_recorded_at_idx ON cost_ledger (recorded_at);

-- Embeddings already made, by (model, dimensions, sha256 of the text), one row per contributing
-- document: re-chunking a document pays only for text that changed. A document's rows go when it
-- is deleted (its vectors blob may then be garbage-collected, and replay must give the same table).
CREATE TABLE embedding_cache (
    model       text    NOT NULL,
    dimensions  integer NOT NULL,
    text_sha256 text    NOT NULL,
    document_id uuid    NOT NULL,
    embedding   vector  NOT NULL,
    PRIMARY KEY (model, dimensions, text_sha256, document_id)
);
CREATE INDEX embedding_cache_document_id_idx ON embedding_cache (document_id);

-- Operator settings (not a projection: set by hand, e.g. the monthly budget and search tuning).
CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO settings (key, value) VALUES
    ('monthly_budget_usd', '50'),   -- the product plan's alert threshold; env CHRONOS_MONTHLY_BUDGET_USD overrides
    ('hnsw_ef_search', '100'),      -- HNSW search breadth (recall vs latency; see chronos bench search)
    ('hnsw_m', '16'),               -- HNSW graph degree, used when a model's index is created
    ('hnsw_ef_construction', '64'); -- HNSW build breadth, used when a model's index is created

-- The single place that quotes identifiers and literals into DDL: one HNSW index per model, an
-- expression index on the fixed-dimension cast, partial on the model. Creates it in the schema of
-- the `vectors` table found on the search_path (replay builds into a shadow schema).
CREATE FUNCTION ensure_vector_index(p_model text, p_dimensions integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    idx text := 'vectors_hnsw_' || left(md5(p_model), 16);
    m   integer := coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_m'), 16);
    efc integer := coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_construction'), 64);
BEGIN
    IF p_dimensions IS NULL OR p_dimensions < 1 OR p_dimensions > 2000 THEN
        RAISE EXCEPTION 'cannot index % vectors of % dimensions (HNSW supports 1..2000)', p_model, p_dimensions;
    END IF;
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON vectors USING hnsw ((embedding::vector(%s)) vector_cosine_ops) '
        'WITH (m = %s, ef_construction = %s) WHERE model = %L',
        idx, p_dimensions, m, efc, p_model);
    RETURN idx;
END;
$$;
