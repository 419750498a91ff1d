-- Queries of the projectors (projections/). Table names are unqualified on purpose: replay runs
-- the same queries with search_path = chronos_replay, public to build shadow tables.

-- name: documents_get
SELECT * FROM documents WHERE document_id = ANY ($1::uuid[]);

-- name: documents_delete
DELETE FROM documents WHERE document_id = ANY ($1::uuid[]);

-- name: documents_insert
INSERT INTO documents SELECT * FROM jsonb_populate_recordset(NULL::documents, $1::jsonb);

-- name: chunk_set_rows
-- Ordinals and text hashes of chunk sets, looked up in the log (ordinal order = vectors blob rows).
-- One DocumentChunked per set: logs written before sets were deduplicated may hold the same set twice.
WITH sets AS (
    SELECT DISTINCT ON (e.data ->> 'chunk_set_id') e.data ->> 'chunk_set_id' AS chunk_set_id,
           e.data -> 'chunks' AS chunks
    FROM events e
    WHERE e.stream_id = ANY ($1::text[]) AND e.type = 'DocumentChunked'
      AND e.data ->> 'chunk_set_id' = ANY ($2::text[])
    ORDER BY e.data ->> 'chunk_set_id', e.position
)
SELECT s.chunk_set_id,
       array_agg((c ->> 'ordinal')::integer ORDER BY (c ->> 'ordinal')::integer) AS ordinals,
       array_agg(coalesce(c ->> 'embed_sha256', c ->> 'text_sha256') ORDER BY (c ->> 'ordinal')::integer) AS hashes
FROM sets s, jsonb_array_elements(s.chunks) AS c
GROUP BY s.chunk_set_id;

-- name: deletion_marks
SELECT stream_id, stream_version, type FROM events
WHERE stream_id = ANY ($1::text[]) AND type IN ('DocumentUploaded', 'DocumentDeleted')
ORDER BY stream_id, stream_version;

-- name: embedding_models_get
SELECT model, dimensions FROM embedding_models WHERE model = ANY ($1::text[]);

-- name: embedding_models_all
SELECT model, dimensions FROM embedding_models ORDER BY first_position;

-- name: embedding_models_insert
INSERT INTO embedding_models (model, dimensions, index_name, first_position) VALUES ($1, $2, $3, $4);

-- name: embedding_models_set_index
UPDATE embedding_models SET index_name = $2 WHERE model = $1;

-- name: ensure_vector_index
SELECT ensure_vector_index($1, $2);

-- name: cost_ledger_insert
INSERT INTO cost_ledger SELECT * FROM jsonb_populate_recordset(NULL::cost_ledger, $1::jsonb)
ON CONFLICT DO NOTHING;

-- name: embedding_cache_delete_document
DELETE FROM embedding_cache WHERE document_id = $1::uuid;

-- name: embedding_cache_existing
SELECT c.model, c.dimensions, c.text_sha256, c.document_id
FROM embedding_cache c
JOIN unnest($1::text[], $2::integer[], $3::text[], $4::uuid[]) AS k(model, dimensions, text_sha256, document_id)
  USING (model, dimensions, text_sha256, document_id);

-- name: gc_candidates
-- Blobs referenced by deleted documents' events and by no other document's events. A document is
-- deleted when its latest DocumentUploaded/DocumentDeleted is a deletion. Blobs no event names at
-- all are left alone (an upload may be about to append its event).
WITH refs AS (
    SELECT e.stream_id, r.sha256
    FROM events e,
         LATERAL (VALUES (e.data -> 'blob' ->> 'sha256'), (e.data -> 'docling_json' ->> 'sha256'),
                         (e.data -> 'markdown' ->> 'sha256'), (e.data -> 'vectors' ->> 'sha256'),
                         (e.data -> 'content' ->> 'sha256')) AS r(sha256)
    WHERE e.stream_id LIKE 'document-%' AND r.sha256 IS NOT NULL
), state AS (
    SELECT DISTINCT ON (stream_id) stream_id, type = 'DocumentDeleted' AS deleted
    FROM events WHERE type IN ('DocumentUploaded', 'DocumentDeleted')
    ORDER BY stream_id, stream_version DESC
)
SELECT DISTINCT refs.sha256 FROM refs JOIN state USING (stream_id)
WHERE state.deleted
  AND NOT EXISTS (SELECT 1 FROM refs r2 JOIN state s2 USING (stream_id) WHERE r2.sha256 = refs.sha256 AND NOT s2.deleted)
  AND EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = refs.sha256);

-- name: bulk_index_settings
-- Before building an HNSW index after a bulk load (replay), for this session (the build runs
-- CONCURRENTLY, outside a transaction): $1 MB of maintenance_work_mem, so the whole graph fits
-- (projections/index_memory.py; never less than the session's own setting), and a parallel build
-- (pgvector >= 0.6). Returns the MB set.
SELECT set_config('maintenance_work_mem', v.mb || 'MB', false),
       set_config('max_parallel_maintenance_workers', '2', false),
       v.mb
FROM (SELECT greatest($1::bigint, pg_size_bytes(current_setting('maintenance_work_mem')) / 1048576) AS mb) v;

-- name: bulk_index_settings_reset
-- After the build: the session's settings as they were (the pool hands the connection on).
SELECT set_config('maintenance_work_mem', $1, false), set_config('max_parallel_maintenance_workers', $2, false);

-- name: bulk_index_settings_current
SELECT current_setting('maintenance_work_mem') AS maintenance_work_mem,
       current_setting('max_parallel_maintenance_workers') AS max_parallel_maintenance_workers;

-- name: vector_index_statement
-- The CREATE INDEX of a model's HNSW index (sql/097), CONCURRENTLY when $3.
SELECT index_name, statement FROM vector_index_statement($1, $2, $3);

-- name: drop_vector_index_statement
-- The DROP of index $1 beside the vectors table the search_path names: the invalid index a failed
-- concurrent build leaves behind.
SELECT format('DROP INDEX IF EXISTS %I.%I', n.nspname, $1::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = 'vectors'::regclass;

-- name: vectors_per_model
SELECT count(*) FROM vectors WHERE model = $1;

-- name: hnsw_parameters
SELECT coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_m'), 16) AS m,
       coalesce((SELECT value::integer FROM settings WHERE key = 'hnsw_ef_construction'), 64) AS ef_construction;

-- name: document_events_upto
-- A document stream's events that a projector's checkpoint already covers, in stream order
-- (`chronos replay --document`).
SELECT position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_version, type, schema_version,
       data, metadata, recorded_at
FROM events
WHERE stream_id = ANY ($1::text[])
  AND (tx_id, position) <= ($2::text::xid8, $3::bigint)
ORDER BY stream_id, stream_version;

-- name: document_keyed_tables
-- Which of a projector's tables hold rows per document (a document_id column).
SELECT table_name::text FROM information_schema.columns
WHERE table_schema = current_schema() AND column_name = 'document_id' AND table_name = ANY ($1::text[]);

-- name: streams_present
SELECT DISTINCT stream_id FROM events WHERE stream_id = ANY ($1::text[]);

-- name: gc_unreferenced
-- Published blobs that no event names at all, older than the cutoff: bytes of refused uploads (415,
-- 413 after the limit, empty) and stage outputs whose job never recorded them. The cutoff leaves
-- time for an upload or a job to append the event that names its blob.
WITH named AS (
    SELECT r.sha256
    FROM events e,
         LATERAL (VALUES (e.data -> 'blob' ->> 'sha256'), (e.data -> 'docling_json' ->> 'sha256'),
                         (e.data -> 'markdown' ->> 'sha256'), (e.data -> 'vectors' ->> 'sha256'),
                         (e.data -> 'content' ->> 'sha256'), (e.data ->> 'sha256'),
                         (e.data -> 'input' ->> 'sha256'),                             -- Batch API files:
                         (e.data -> 'output' ->> 'sha256'), (e.data -> 'errors' ->> 'sha256')) AS r(sha256)
    WHERE r.sha256 IS NOT NULL
)
SELECT b.sha256 FROM blobs b
WHERE b.created_at < $1
  AND NOT EXISTS (SELECT 1 FROM named WHERE named.sha256 = b.sha256);
