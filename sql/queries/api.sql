-- Queries of the HTTP API (app/api/). Values are always parameters.

-- name: documents_page
-- Newest first; keyset paging on (uploaded_at, document_id). $1 statuses (NULL = all),
-- $2/$3 the cursor (NULL = first page), $4 page size, $5 collections (NULL = all; app/services/visibility.py).
SELECT document_id, filename, media_type, size, source, source_ref, status, current_stage, page_count,
       chunk_count, embedding_model, backend, pipeline, attempts, last_error, error_class, failed_stage,
       total_cost_usd, uploaded_at, requested_at, converted_at, chunked_at, embedded_at, failed_at, deleted_at,
       updated_at, last_position, collection, metadata
FROM documents
WHERE ($1::text[] IS NULL OR status = ANY ($1::text[]))
  AND ($5::text[] IS NULL OR collection = ANY ($5::text[]))
  AND ($2::timestamptz IS NULL
       OR (coalesce(uploaded_at, 'epoch'::timestamptz), document_id) < ($2::timestamptz, $3::uuid))
ORDER BY coalesce(uploaded_at, 'epoch'::timestamptz) DESC, document_id DESC
LIMIT $4;

-- name: document_row
SELECT * FROM documents WHERE document_id = $1;

-- name: document_jobs
SELECT stage, status, attempts, max_attempts, lease_owner, lease_until, not_before, last_error, created_at,
       updated_at, finished_at
FROM jobs WHERE document_id = $1 ORDER BY created_at, trigger_position;

-- name: snapshot_cursor
-- The oldest transaction still running: every event of an older transaction is final.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin;

-- name: cursor_at_position
-- The (tx_id, position) cursor of the last event at or before a position.
SELECT tx_id::text::bigint AS tx_id, position FROM events WHERE position <= $1 ORDER BY position DESC LIMIT 1;

-- name: costs_daily
-- overhead_usd: the part of Modal lines paying for cold starts and the idle tail of containers (the
-- line's details: (cold_start_s + idle_s) / container_s of its amount; app/convert/container.py).
SELECT date_trunc('day', recorded_at)::date AS day, stage, provider, sum(amount_usd) AS usd, count(*) AS lines,
       coalesce(sum(amount_usd * least(1, (coalesce((details ->> 'cold_start_s')::numeric, 0)
                                           + coalesce((details ->> 'idle_s')::numeric, 0))
                                          / nullif((details ->> 'container_s')::numeric, 0)))
                FILTER (WHERE provider = 'modal'), 0) AS overhead_usd
FROM cost_ledger
WHERE recorded_at >= $1::date AND recorded_at < $2::date + 1
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: budget
SELECT month, spent_usd, budget_usd FROM v_budget_month;

-- name: workers_connected
-- A process running stage workers names its wake-up hub's LISTEN connection
-- 'chronos-hub:worker:<host>:<pid>' (app/pipeline/worker.py) while they run.
SELECT count(*) AS n, array_agg(application_name ORDER BY application_name) AS names
FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'chronos-hub:worker:%';

-- name: job_leases
-- Running jobs whose lease expired belong to a worker that stopped heartbeating.
SELECT count(*) FILTER (WHERE status = 'running' AND lease_until >= now()) AS running,
       count(*) FILTER (WHERE status = 'running' AND lease_until < now()) AS expired,
       count(*) FILTER (WHERE status = 'queued' AND not_before <= now()) AS ready,
       extract(epoch FROM now() - min(not_before) FILTER (WHERE status = 'queued' AND not_before <= now()))
           ::double precision AS oldest_ready_s
FROM jobs;

-- name: metrics_events
SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type;

-- name: metrics_head
SELECT coalesce(max(position), 0) AS head FROM events;

-- name: metrics_documents
SELECT status, count(*) AS n FROM documents GROUP BY status ORDER BY status;

-- name: metrics_jobs
SELECT stage, status, count(*) AS n FROM jobs GROUP BY stage, status ORDER BY stage, status;

-- name: metrics_failures
SELECT CASE type WHEN 'ConversionFailed' THEN 'convert' WHEN 'ChunkingFailed' THEN 'chunk' ELSE 'embed' END AS stage,
       coalesce(data ->> 'error_class', 'unknown') AS error_class,
       coalesce((data ->> 'final')::boolean, false) AS final,
       count(*) AS n
FROM events
WHERE type IN ('ConversionFailed', 'ChunkingFailed', 'EmbeddingFailed')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: metrics_stage_durations
-- Stage latency (request or previous result -> result) per histogram bucket: width_bucket gives
-- how many of the bounds $1 (ascending) lie at or below the latency; the caller makes it cumulative.
SELECT stage, width_bucket(latency_s, $1::float8[]) AS bucket, count(*) AS n, sum(latency_s) AS total_s
FROM v_stage_events
WHERE succeeded AND latency_s IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: metrics_spend
SELECT stage, provider, sum(amount_usd) AS usd FROM cost_ledger GROUP BY stage, provider ORDER BY stage, provider;

-- name: spend_month_by_stage_provider
SELECT stage, provider, sum(amount_usd) AS usd FROM cost_ledger
WHERE recorded_at >= date_trunc('month', now())
GROUP BY 1, 2 ORDER BY 3 DESC;

-- name: costs_daily_by_collection
-- As costs_daily, by collection too: a cost line's collection is its document's (the documents projection
-- keeps deleted documents, so their spend stays in their collection); lines of no document (query
-- embeddings, reconcile adjustments) have none (NULL) and are shown only with $3 NULL (every collection).
SELECT date_trunc('day', c.recorded_at)::date AS day, d.collection, c.stage, c.provider,
       sum(c.amount_usd) AS usd, count(*) AS lines,
       coalesce(sum(c.amount_usd * least(1, (coalesce((c.details ->> 'cold_start_s')::numeric, 0)
                                             + coalesce((c.details ->> 'idle_s')::numeric, 0))
                                            / nullif((c.details ->> 'container_s')::numeric, 0)))
                FILTER (WHERE c.provider = 'modal'), 0) AS overhead_usd
FROM cost_ledger c LEFT JOIN documents d ON d.document_id = c.document_id
WHERE c.recorded_at >= $1::date AND c.recorded_at < $2::date + 1
  AND ($3::text[] IS NULL OR d.collection = ANY ($3::text[]))
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;
