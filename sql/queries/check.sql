-- name: stream_gaps
-- Stream versions must run 1..n without gaps (unique (stream, version) + max = count).
SELECT stream_id, count(*) AS events, max(stream_version) AS max_version
FROM events GROUP BY stream_id HAVING max(stream_version) <> count(*) OR min(stream_version) <> 1
LIMIT 100;

-- name: duplicate_results
-- One result event of each kind (and embedding model) per job: a second one means a job recorded (or
-- paid) twice. An embed job during a model switch records one ChunksEmbedded per model.
SELECT metadata ->> 'job_id' AS job_id, type, count(*) AS n
FROM events
WHERE metadata ? 'job_id' AND type IN ('DocumentConverted', 'DocumentChunked', 'ChunksEmbedded')
GROUP BY 1, 2, data ->> 'model' HAVING count(*) > 1
LIMIT 100;

-- name: duplicate_costs
SELECT data ->> 'caused_by' AS caused_by, data ->> 'resource' AS resource, count(*) AS n
FROM events WHERE type = 'CostIncurred'
GROUP BY 1, 2 HAVING count(*) > 1
LIMIT 100;

-- name: referenced_blobs
-- Every blob an event points at (uploads, conversion outputs, vectors).
SELECT DISTINCT ref FROM (
    SELECT data -> 'blob' ->> 'sha256' AS ref FROM events WHERE type = 'DocumentUploaded'
    UNION ALL SELECT data -> 'docling_json' ->> 'sha256' FROM events WHERE type = 'DocumentConverted'
    UNION ALL SELECT data -> 'markdown' ->> 'sha256' FROM events WHERE type = 'DocumentConverted'
    UNION ALL SELECT data -> 'vectors' ->> 'sha256' FROM events WHERE type IN ('ChunksEmbedded', 'EmbeddingsCached')
    UNION ALL SELECT data -> 'content' ->> 'sha256' FROM events WHERE type = 'DocumentChunked'
    UNION ALL SELECT data -> 'input' ->> 'sha256' FROM events WHERE type = 'EmbeddingBatchSubmitted'
    UNION ALL SELECT data -> k ->> 'sha256' FROM events, unnest(ARRAY['output', 'errors']) AS k
              WHERE type = 'EmbeddingBatchFinished'
) refs WHERE ref IS NOT NULL;

-- name: missing_blobs
SELECT r.ref FROM unnest($1::text[]) AS r(ref) LEFT JOIN blobs b ON b.sha256 = r.ref WHERE b.sha256 IS NULL;

-- name: unreferenced_blobs
SELECT sha256, size FROM blobs WHERE NOT (sha256 = ANY ($1::text[]));

-- name: orphan_chunks
-- Chunks of content never published and not being uploaded right now.
SELECT count(*) FROM (
    SELECT DISTINCT c.content_id FROM blob_chunks c
    LEFT JOIN blobs b ON b.content_id = c.content_id
    LEFT JOIN blob_uploads u ON u.content_id = c.content_id
    WHERE b.content_id IS NULL AND u.content_id IS NULL
) o;

-- name: subscriptions
SELECT name, tx_id::text::bigint AS tx_id, position, updated_at FROM subscriptions ORDER BY name;

-- name: behind
SELECT count(*) FROM events WHERE (tx_id, position) > ($1::text::xid8, $2::bigint);

-- name: stale_jobs
SELECT job_id, stage, document_id, lease_owner, lease_until FROM jobs
WHERE status = 'running' AND lease_until < now() - interval '10 minutes'
LIMIT 100;

-- name: documents_missing
-- Documents in the log (uploaded, not deleted) without a row in the documents projection.
SELECT substr(u.stream_id, 10) AS document_id
FROM (SELECT DISTINCT stream_id FROM events WHERE type = 'DocumentUploaded') u
WHERE NOT EXISTS (SELECT 1 FROM events d WHERE d.stream_id = u.stream_id AND d.type = 'DocumentDeleted')
  AND NOT EXISTS (SELECT 1 FROM documents p WHERE p.document_id::text = substr(u.stream_id, 10))
LIMIT 100;

-- name: searchable_without_vectors
-- Searchable documents with no serving vectors of their chunk set: search cannot find them.
SELECT d.document_id::text AS document_id, d.filename
FROM documents d
WHERE d.status = 'searchable' AND coalesce(d.chunk_count, 0) > 0
  AND NOT EXISTS (SELECT 1 FROM vector_sets s WHERE s.document_id = d.document_id
                    AND s.chunk_set_id::text = d.state ->> 'serving_chunk_set_id')
ORDER BY d.uploaded_at
LIMIT 100;

-- name: vector_problems
SELECT document_id::text AS document_id, model, problem FROM vector_problems ORDER BY position LIMIT 100;

-- name: held_back
-- Committed events no subscriber can read yet: the log is read below the server's oldest transaction
-- still in progress (pg_snapshot_xmin, any database), so every event at or above it waits for that
-- transaction to end. Normal for a moment (a concurrent append); a problem when it lasts.
SELECT count(*) AS events,
       extract(epoch FROM clock_timestamp() - min(recorded_at))::float8 AS oldest_s,
       pg_snapshot_xmin(pg_current_snapshot())::text AS horizon
FROM events
WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot());

-- name: horizon_holders
-- The transactions holding an id, oldest first: the first is what the log's readable head waits for.
-- Sessions of any database on the server (the query text only where this role may read it) and
-- prepared transactions. age() works on the 32-bit ids pg_stat_activity shows.
SELECT kind, pid, database, role, application, state, xid_age, open_s, query FROM (
  SELECT 'session' AS kind, pid, datname::text AS database, usename::text AS role,
         application_name AS application, state, age(backend_xid) AS xid_age,
         extract(epoch FROM clock_timestamp() - xact_start)::float8 AS open_s,
         left(regexp_replace(query, '\s+', ' ', 'g'), 120) AS query
  FROM pg_stat_activity
  WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
  UNION ALL
  SELECT 'prepared', NULL, database::text, owner::text, gid, 'prepared', age(transaction),
         extract(epoch FROM clock_timestamp() - prepared)::float8, NULL
  FROM pg_prepared_xacts
) AS holders
ORDER BY xid_age DESC
LIMIT 5;
