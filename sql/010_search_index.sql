-- One projection, `index`, owns everything search reads, so it can switch a document atomically:
-- the vectors of a (document, model) are replaced by a newer chunk set's only when that set's vectors
-- are in, in the same transaction that installs its chunk rows. Search never sees both sets of a
-- document, and never neither (the old set keeps answering until the new one is embedded).
--
-- * chunk_sets     every chunk set of every document (parameters; where it was chunked in the log)
-- * chunk_rows     the chunks of every set that has ever served search, `serving` marking the sets
--                  that serve now; the public `chunks` is the view of the serving rows
-- * vector_sets    which chunk set serves each (document, model), since which position
-- * vectors        the serving vectors (one HNSW index per model), with the position they serve from
-- * vectors_history vectors that served before, with the position range they served in
--                  (search as of a past moment reads them; a deletion removes them too)
-- * index_documents the projector's own bookkeeping per document
--
-- The former chunks and vectors projections are replaced; their tables are rebuilt from the log by
-- the new projection (no model, Modal or OpenAI call: vectors and chunk texts come from the blob store
-- and the log). Until it has caught up after an upgrade, search answers from fewer documents.

DROP VIEW IF EXISTS v_search_models CASCADE;  -- read vector_documents; sql/views/010_search.sql makes it anew

DROP TABLE chunks;
DROP TABLE chunk_sets;
DROP TABLE vector_documents;
DELETE FROM vector_sets;
DELETE FROM vectors;
DELETE FROM vector_problems;
DELETE FROM embedding_models;
DELETE FROM subscriptions WHERE name IN ('projection:chunks', 'projection:vectors');

ALTER TABLE vectors ADD COLUMN valid_from bigint NOT NULL DEFAULT 0;
ALTER TABLE vector_sets ADD COLUMN revision integer NOT NULL DEFAULT 1;

CREATE TABLE index_documents (
    document_id    uuid PRIMARY KEY,
    deleted        boolean NOT NULL DEFAULT false,
    stream_version integer NOT NULL,
    position       bigint  NOT NULL
);

CREATE TABLE chunk_sets (
    chunk_set_id     uuid PRIMARY KEY,
    document_id      uuid    NOT NULL,
    revision         integer NOT NULL DEFAULT 1,
    conversion_id    uuid,
    parameters       jsonb,
    chunk_count      integer NOT NULL,
    chunked_position bigint  NOT NULL
);
CREATE INDEX chunk_sets_document_id_idx ON chunk_sets (document_id);

CREATE TABLE chunk_rows (
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
    serving       boolean NOT NULL DEFAULT false,
    served_from   bigint  NOT NULL,
    UNIQUE (chunk_set_id, ordinal)
);
CREATE INDEX chunk_rows_document_id_idx ON chunk_rows (document_id);
CREATE INDEX chunk_rows_serving_idx ON chunk_rows (document_id, ordinal) WHERE serving;

CREATE TABLE vectors_history (
    chunk_id    uuid   NOT NULL,
    model       text   NOT NULL,
    document_id uuid   NOT NULL,
    embedding   vector NOT NULL,
    valid_from  bigint NOT NULL,
    valid_to    bigint NOT NULL,
    PRIMARY KEY (chunk_id, model, valid_from)
);
CREATE INDEX vectors_history_document_id_idx ON vectors_history (document_id);
CREATE INDEX vectors_history_model_idx ON vectors_history (model, valid_from, valid_to);
-- The view `chunks` (the rows of the sets search serves now) is in sql/views/005_chunks.sql, so that
-- `chronos replay` re-creates it over the swapped-in chunk_rows.
