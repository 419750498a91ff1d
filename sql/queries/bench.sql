-- name: log_per_document
-- What the log holds for each document of a bench run: chunks (latest chunk set), vectors, events.
SELECT e.stream_id,
       count(*) AS events,
       coalesce(max(jsonb_array_length(e.data -> 'chunks')) FILTER (WHERE e.type = 'DocumentChunked'), 0) AS chunks,
       coalesce(max((e.data ->> 'chunk_count')::int) FILTER (WHERE e.type = 'ChunksEmbedded'), 0) AS vectors,
       count(*) FILTER (WHERE e.type = 'CostIncurred') AS cost_events
FROM events e
WHERE e.stream_id = ANY ($1::text[])
GROUP BY e.stream_id;

-- name: tables_per_document
-- What the projections hold for each document: chunks and vectors rows, cost ledger lines.
SELECT d.document_id,
       (SELECT count(*) FROM chunks c WHERE c.document_id = d.document_id) AS chunks,
       (SELECT count(*) FROM vectors v WHERE v.document_id = d.document_id) AS vectors,
       (SELECT count(*) FROM cost_ledger l WHERE l.document_id = d.document_id) AS cost_lines,
       d.status
FROM documents d
WHERE d.document_id = ANY ($1::uuid[]);

-- name: log_totals
SELECT count(*) AS events, count(*) FILTER (WHERE type = 'CostIncurred') AS cost_events FROM events;

-- name: plain_event_table
-- bench events: the baseline, a plain table shaped like events (no trigger, no NOTIFY, no version check).
CREATE TABLE bench_plain (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL, stream_id text NOT NULL, stream_version integer NOT NULL,
    type text NOT NULL, schema_version integer NOT NULL DEFAULT 1, data jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb, recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: plain_event_insert
INSERT INTO bench_plain (event_id, stream_id, stream_version, type, data, metadata)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: plain_index_tables
-- bench replay: the COPY baseline's tables, shaped like the ones replay writes.
CREATE TABLE plain_chunks (LIKE chunk_rows INCLUDING ALL);
CREATE TABLE plain_vectors (LIKE vectors INCLUDING ALL);

-- name: chunk_count
SELECT count(*) FROM chunks;

-- name: stream_events
-- bench large-input: one document's events in order.
SELECT type, data FROM events WHERE stream_id = $1 ORDER BY stream_version;

-- name: pipeline_stage_gaps
-- `chronos bench pipeline`: median seconds between a document's stage events after position $1
-- (upload -> converted -> chunked -> embedded), where its time to searchable goes.
WITH t AS (
    SELECT stream_id,
           min(recorded_at) FILTER (WHERE type = 'DocumentUploaded') AS uploaded,
           min(recorded_at) FILTER (WHERE type = 'DocumentConverted') AS converted,
           min(recorded_at) FILTER (WHERE type = 'DocumentChunked') AS chunked,
           min(recorded_at) FILTER (WHERE type = 'ChunksEmbedded') AS embedded
    FROM events WHERE position > $1 GROUP BY stream_id
)
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM converted - uploaded)) AS upload_to_converted,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM chunked - converted)) AS converted_to_chunked,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM embedded - chunked)) AS chunked_to_embedded
FROM t WHERE uploaded IS NOT NULL;
