-- Views for analysts (documented in docs/sql.md). Idempotent: dropped and recreated when changed.

DROP VIEW IF EXISTS v_documents CASCADE;
CREATE VIEW v_documents AS
SELECT document_id, filename, media_type, status, current_stage, page_count, chunk_count, backend, pipeline,
       docling_version, embedding_model, total_cost_usd, last_error, error_class, failed_stage,
       uploaded_at, converted_at, chunked_at, embedded_at, failed_at, deleted_at, updated_at,
       collection, metadata
FROM documents;

-- The chunks search answers from now, with their document's collection and current metadata (copied onto
-- the chunk rows by the index projection, docs/collections.md).
DROP VIEW IF EXISTS v_chunks CASCADE;
CREATE VIEW v_chunks AS
SELECT c.chunk_id, c.document_id, d.filename, c.ordinal, c.text, c.pages, c.heading_path, c.token_count,
       c.collection, c.metadata
FROM chunk_rows c LEFT JOIN documents d USING (document_id)
WHERE c.serving;

-- Every collection (docs/collections.md) with its live documents and this month's spend (UTC).
DROP VIEW IF EXISTS v_collections CASCADE;
CREATE VIEW v_collections AS
SELECT c.name AS collection, c.description, c.monthly_budget_usd, c.created_at,
       (SELECT count(*) FROM documents d WHERE d.collection = c.name AND d.status <> 'deleted') AS documents,
       coalesce((SELECT sum(l.amount_usd) FROM cost_ledger l JOIN documents d USING (document_id)
                 WHERE d.collection = c.name
                   AND l.recorded_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0)
           AS spent_this_month_usd
FROM collections c;

-- One row per stage result or failure, from the log: every conversion, chunk set and embedding
-- ever made (older versions included), with the time since the event that started the stage.
DROP VIEW IF EXISTS v_stage_events CASCADE;
CREATE VIEW v_stage_events AS
SELECT e.position, e.recorded_at, (e.data ->> 'document_id')::uuid AS document_id,
       CASE WHEN e.type IN ('DocumentConverted', 'ConversionFailed') THEN 'convert'
            WHEN e.type IN ('DocumentChunked', 'ChunkingFailed') THEN 'chunk'
            ELSE 'embed' END AS stage,
       e.type, e.type NOT LIKE '%Failed' AS succeeded,
       CASE WHEN e.type = 'DocumentConverted' THEN e.data ->> 'conversion_id' ELSE e.data ->> 'chunk_set_id' END
           AS result_id,
       e.data ->> 'backend' AS backend, e.data ->> 'model' AS model,
       e.data ->> 'error_class' AS error_class, e.data ->> 'message' AS message,
       (e.data ->> 'final')::boolean AS final,
       extract(epoch FROM e.recorded_at - started.recorded_at)::double precision AS latency_s
FROM events e
LEFT JOIN LATERAL (
    SELECT s.recorded_at FROM events s
    WHERE s.stream_id = e.stream_id AND s.stream_version < e.stream_version
      AND s.type = ANY (CASE
          WHEN e.type IN ('DocumentConverted', 'ConversionFailed') THEN ARRAY['DocumentUploaded', 'ConversionRequested']
          WHEN e.type IN ('DocumentChunked', 'ChunkingFailed') THEN ARRAY['DocumentConverted', 'ChunkingRequested']
          ELSE ARRAY['DocumentChunked', 'EmbeddingRequested'] END)
    ORDER BY s.stream_version DESC LIMIT 1
) started ON true
WHERE e.type IN ('DocumentConverted', 'ConversionFailed', 'DocumentChunked', 'ChunkingFailed',
                 'ChunksEmbedded', 'EmbeddingFailed');

DROP VIEW IF EXISTS v_stage_latency_daily CASCADE;
CREATE VIEW v_stage_latency_daily AS
SELECT date_trunc('day', recorded_at)::date AS day, stage, count(*) AS results,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_s) AS p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_s) AS p95_s
FROM v_stage_events WHERE succeeded
GROUP BY 1, 2;

DROP VIEW IF EXISTS v_cost_daily CASCADE;
CREATE VIEW v_cost_daily AS
SELECT date_trunc('day', recorded_at)::date AS day, stage, provider, resource,
       sum(quantity) AS quantity, sum(amount_usd) AS amount_usd
FROM cost_ledger GROUP BY 1, 2, 3, 4;

DROP VIEW IF EXISTS v_cost_by_document CASCADE;
CREATE VIEW v_cost_by_document AS
SELECT c.document_id, d.filename, d.status, sum(c.amount_usd) AS amount_usd,
       sum(c.amount_usd) FILTER (WHERE c.stage = 'convert') AS convert_usd,
       sum(c.amount_usd) FILTER (WHERE c.stage = 'embed') AS embed_usd,
       d.collection
FROM cost_ledger c LEFT JOIN documents d USING (document_id)
GROUP BY c.document_id, d.filename, d.status, d.collection;

DROP VIEW IF EXISTS v_budget_month CASCADE;
CREATE VIEW v_budget_month AS
SELECT date_trunc('month', now())::date AS month,
       coalesce((SELECT sum(amount_usd) FROM cost_ledger WHERE recorded_at >= date_trunc('month', now())), 0)
           AS spent_usd,
       coalesce((SELECT value::numeric FROM settings WHERE key = 'monthly_budget_usd'), 50) AS budget_usd;

DROP VIEW IF EXISTS v_failures CASCADE;
CREATE VIEW v_failures AS
SELECT document_id, filename, failed_stage, error_class, last_error, attempts, failed_at, collection
FROM documents WHERE status = 'failed';

-- One row per revision of every document, from the log (docs/revisions.md): where its content came
-- from, when each stage finished for it, its last failure (when its last stage event is one), what its
-- results cost, and whether search answers from it. Events older than revisions carry no revision:
-- they belong to the revision uploaded last before them in their stream.
DROP VIEW IF EXISTS v_document_revisions CASCADE;
CREATE VIEW v_document_revisions AS
WITH uploads AS (
    SELECT e.stream_id, (e.data ->> 'document_id')::uuid AS document_id,
           coalesce((e.data ->> 'revision')::int, 1) AS revision, e.position, e.recorded_at AS uploaded_at,
           e.data ->> 'key' AS key, e.data ->> 'filename' AS filename, e.data ->> 'media_type' AS media_type,
           (e.data ->> 'size')::bigint AS size, e.data ->> 'sha256' AS sha256, e.data ->> 'source' AS source,
           e.data ->> 'source_ref' AS source_ref, e.metadata ->> 'actor' AS actor,
           coalesce(e.data ->> 'collection', 'default') AS collection
    FROM events e WHERE e.type = 'DocumentUploaded'
), results AS (
    SELECT e.stream_id, e.position, e.event_id, e.type, e.recorded_at, e.data,
           coalesce((e.data ->> 'revision')::int, (
               SELECT coalesce((u.data ->> 'revision')::int, 1) FROM events u
               WHERE u.stream_id = e.stream_id AND u.type = 'DocumentUploaded' AND u.position < e.position
               ORDER BY u.position DESC LIMIT 1)) AS revision
    FROM events e
    WHERE e.type IN ('DocumentConverted', 'DocumentChunked', 'ChunkingUnchanged', 'ChunksEmbedded',
                     'ConversionFailed', 'ChunkingFailed', 'EmbeddingFailed')
)
SELECT u.document_id, u.revision, u.key, u.uploaded_at, u.filename, u.media_type, u.size, u.sha256, u.source,
       u.source_ref, u.actor, s.converted_at, s.chunked_at, s.embedded_at, last.failed_stage, last.failure,
       coalesce(c.cost_usd, 0) AS cost_usd,
       (d.serving_revision = u.revision AND d.deleted_at IS NULL) AS serving,
       d.revision = u.revision AS latest, d.deleted_at, u.collection
FROM uploads u
LEFT JOIN LATERAL (
    SELECT max(r.recorded_at) FILTER (WHERE r.type = 'DocumentConverted') AS converted_at,
           max(r.recorded_at) FILTER (WHERE r.type IN ('DocumentChunked', 'ChunkingUnchanged')) AS chunked_at,
           max(r.recorded_at) FILTER (WHERE r.type = 'ChunksEmbedded') AS embedded_at
    FROM results r WHERE r.stream_id = u.stream_id AND r.revision = u.revision
) s ON true
LEFT JOIN LATERAL (
    SELECT CASE r.type WHEN 'ConversionFailed' THEN 'convert' WHEN 'ChunkingFailed' THEN 'chunk' ELSE 'embed' END
               AS failed_stage,
           r.data ->> 'message' AS failure
    FROM (SELECT * FROM results r WHERE r.stream_id = u.stream_id AND r.revision = u.revision
          ORDER BY r.position DESC LIMIT 1) r
    WHERE r.type LIKE '%Failed'
) last ON true
LEFT JOIN LATERAL (
    SELECT sum((ce.data ->> 'amount_usd')::numeric) AS cost_usd
    FROM results r JOIN events ce ON ce.type = 'CostIncurred' AND ce.stream_id = r.stream_id
                                  AND ce.data ->> 'caused_by' = r.event_id::text
    WHERE r.stream_id = u.stream_id AND r.revision = u.revision
) c ON true
LEFT JOIN documents d ON d.document_id = u.document_id;
