-- name: enqueue
INSERT INTO jobs (job_id, document_id, stage, trigger_event_id, trigger_position, params, max_attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (job_id) DO NOTHING;

-- name: claim
-- FOR UPDATE SKIP LOCKED: concurrent workers each take different rows without waiting on each
-- other. A 'running' job whose lease expired belongs to a worker that died: take it over.
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,
       lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE job_id IN (
    SELECT job_id FROM jobs
    WHERE stage = ANY ($1::text[])
      AND ((status = 'queued' AND not_before <= now())
           OR (status = 'running' AND lease_until < now()))
    ORDER BY not_before, trigger_position
    FOR UPDATE SKIP LOCKED
    LIMIT $4
)
RETURNING job_id, document_id, stage, trigger_event_id, trigger_position, params, attempts, max_attempts;

-- name: claim_needing_no_converter
-- Convert jobs for uploads no converter is needed for (empty, or content Chronos cannot convert:
-- $4 the supported media types, the rule of app.convert.sniff.unsupported): the stage fails them at
-- once, so a worker takes them even while its convert slots are busy with a slow conversion.
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1,
       lease_until = now() + make_interval(secs => $2), updated_at = now()
WHERE job_id IN (
    SELECT j.job_id FROM jobs j JOIN events e ON e.event_id = j.trigger_event_id
    WHERE j.stage = 'convert'
      AND ((j.status = 'queued' AND j.not_before <= now())
           OR (j.status = 'running' AND j.lease_until < now()))
      AND e.type = 'DocumentUploaded'
      AND (coalesce((e.data ->> 'size')::bigint, 0) = 0 OR NOT (e.data ->> 'media_type' = ANY ($4::text[])))
    ORDER BY j.not_before, j.trigger_position
    FOR UPDATE OF j SKIP LOCKED
    LIMIT $3
)
RETURNING job_id, document_id, stage, trigger_event_id, trigger_position, params, attempts, max_attempts;

-- name: extend
UPDATE jobs SET lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE job_id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING job_id;

-- name: finish
-- Only the current lease holder may finish a job.
UPDATE jobs SET status = $3, lease_owner = NULL, lease_until = NULL, last_error = $4,
       updated_at = now(), finished_at = now()
WHERE job_id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING job_id;

-- name: retry_later
UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, last_error = $3,
       not_before = now() + make_interval(secs => $4), updated_at = now()
WHERE job_id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING job_id;

-- name: release
-- Give a job back without counting the attempt (worker shutting down).
UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL,
       attempts = greatest(attempts - 1, 0), updated_at = now()
WHERE job_id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING job_id;

-- name: cancel_document
UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_until = NULL, updated_at = now(),
       finished_at = now()
WHERE document_id = $1 AND status IN ('queued', 'running');

-- name: job_status
SELECT status FROM jobs WHERE job_id = $1;

-- name: find_conversion
SELECT stream_id, schema_version, data FROM events
WHERE type = 'DocumentConverted'
  AND data ->> 'input_sha256' = $1 AND data ->> 'settings_hash' = $2
ORDER BY position DESC
LIMIT 1;

-- name: event_exists
SELECT position FROM events WHERE event_id = $1;

-- name: embedding_switch_targets
-- Models asked for by `chronos reprocess --stage embed --model X --all` (a model switch), newest
-- first: new chunk sets are embedded with these too, so the switch can complete.
SELECT data ->> 'model' AS model, max(position) AS position
FROM events
WHERE type = 'EmbeddingRequested' AND data ->> 'scope' = 'all'
GROUP BY 1
ORDER BY 2 DESC
LIMIT 2;
