-- Content-addressed blob store in PostgreSQL. Content is streamed in as chunks under a content id
-- (each chunk its own short transaction, so a large upload never holds one long write transaction),
-- then published under its sha256 in `blobs`. Chunks whose content id was never published are
-- orphans from an interrupted upload and are removed by garbage collection.
CREATE TABLE blob_chunks (
    content_id uuid    NOT NULL,
    seq        integer NOT NULL,
    data       bytea   NOT NULL,
    PRIMARY KEY (content_id, seq)
);
-- Blob content is mostly already compressed (PDF, DOCX, float32 arrays): skip pglz attempts.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE blobs (
    sha256      text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_id  uuid        NOT NULL UNIQUE,
    size        bigint      NOT NULL CHECK (size >= 0),
    chunk_count integer     NOT NULL,
    media_type  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE blob_uploads (
    content_id uuid        PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now()
);
