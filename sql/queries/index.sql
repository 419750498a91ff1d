-- Queries of the index projection (projections/index.py). Table names are unqualified on purpose:
-- replay runs the same queries with search_path = chronos_replay, public to build shadow tables.

-- name: documents_get
SELECT document_id, deleted, stream_version, position, collection, metadata
FROM index_documents WHERE document_id = ANY ($1::uuid[]);

-- name: documents_upsert
INSERT INTO index_documents (document_id, deleted, stream_version, position, collection, metadata)
SELECT * FROM unnest($1::uuid[], $2::boolean[], $3::integer[], $4::bigint[], $5::text[], $6::jsonb[])
ON CONFLICT (document_id) DO UPDATE
SET deleted = EXCLUDED.deleted, stream_version = EXCLUDED.stream_version, position = EXCLUDED.position,
    collection = EXCLUDED.collection, metadata = EXCLUDED.metadata;

-- name: chunk_rows_relabel
-- A document's collection and current metadata onto every chunk row of it (search filters without a join).
UPDATE chunk_rows c SET collection = k.collection, metadata = k.metadata
FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS k(document_id, collection, metadata)
WHERE c.document_id = k.document_id AND (c.collection, c.metadata) IS DISTINCT FROM (k.collection, k.metadata);

-- name: vector_sets_get
SELECT document_id, model, chunk_set_id FROM vector_sets WHERE document_id = ANY ($1::uuid[]);

-- name: set_order
-- Where each chunk set of these documents was chunked: a set chunked later is newer.
SELECT chunk_set_id, chunked_position FROM chunk_sets WHERE document_id = ANY ($1::uuid[]);

-- name: chunk_sets_insert
INSERT INTO chunk_sets (revision, chunk_set_id, document_id, conversion_id, parameters, chunk_count,
                        chunked_position)
SELECT r, s, d, c, p::jsonb, n, pos
FROM unnest($1::integer[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::integer[], $7::bigint[])
    AS t(r, s, d, c, p, n, pos)
ON CONFLICT (chunk_set_id) DO NOTHING;

-- name: chunked_events
-- The DocumentChunked of chunk sets, looked up in the log (the first one of each set).
SELECT DISTINCT ON (data ->> 'chunk_set_id') stream_version, schema_version, data
FROM events
WHERE stream_id = ANY ($1::text[]) AND type = 'DocumentChunked' AND data ->> 'chunk_set_id' = ANY ($2::text[])
ORDER BY data ->> 'chunk_set_id', position;

-- name: purge_documents
-- A deleted document leaves nothing searchable, now or as of any earlier moment.
WITH a AS (DELETE FROM chunk_rows WHERE document_id = ANY ($1::uuid[])),
     b AS (DELETE FROM vectors WHERE document_id = ANY ($1::uuid[])),
     c AS (DELETE FROM vectors_history WHERE document_id = ANY ($1::uuid[])),
     d AS (DELETE FROM vector_sets WHERE document_id = ANY ($1::uuid[])),
     e AS (DELETE FROM vector_problems WHERE document_id = ANY ($1::uuid[]))
DELETE FROM chunk_sets WHERE document_id = ANY ($1::uuid[]);

-- name: vectors_to_history
-- The serving vectors of each (document, model) stop serving at the given position.
WITH moved AS (
    DELETE FROM vectors v USING unnest($1::uuid[], $2::text[], $3::bigint[]) AS k(document_id, model, valid_to)
    WHERE v.document_id = k.document_id AND v.model = k.model
    RETURNING v.chunk_id, v.model, v.document_id, v.embedding, v.valid_from, k.valid_to
)
INSERT INTO vectors_history (chunk_id, model, document_id, embedding, valid_from, valid_to)
SELECT chunk_id, model, document_id, embedding, valid_from, valid_to FROM moved
ON CONFLICT DO NOTHING;

-- name: vector_sets_upsert
INSERT INTO vector_sets (document_id, model, chunk_set_id, dimensions, vector_count, vectors_blob, position, revision)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::integer[], $5::integer[], $6::text[], $7::bigint[],
                     $8::integer[])
ON CONFLICT (document_id, model) DO UPDATE
SET chunk_set_id = EXCLUDED.chunk_set_id, dimensions = EXCLUDED.dimensions, vector_count = EXCLUDED.vector_count,
    vectors_blob = EXCLUDED.vectors_blob, position = EXCLUDED.position, revision = EXCLUDED.revision;

-- name: chunk_rows_present
SELECT DISTINCT chunk_set_id FROM chunk_rows WHERE chunk_set_id = ANY ($1::uuid[]);

-- name: chunk_rows_set_serving
-- A set serves while some model's vectors of the document are of it.
UPDATE chunk_rows c
SET serving = EXISTS (SELECT 1 FROM vector_sets s WHERE s.document_id = c.document_id AND s.chunk_set_id = c.chunk_set_id)
WHERE c.document_id = ANY ($1::uuid[])
  AND c.serving IS DISTINCT FROM
      EXISTS (SELECT 1 FROM vector_sets s WHERE s.document_id = c.document_id AND s.chunk_set_id = c.chunk_set_id);

-- name: vector_problems_insert
INSERT INTO vector_problems (event_id, position, document_id, model, chunk_set_id, problem)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::uuid[], $6::text[])
ON CONFLICT (event_id) DO NOTHING;
