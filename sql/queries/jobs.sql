-- name: enqueue
-- $8 the lane the event asks for (app/pipeline/lanes.py): 'interactive' unless the interactive lane
-- already holds $9 uploads waiting for conversion (then 'batch'); 'batch'; or NULL: the lane of the
-- document's latest job (a later stage goes on in its document's lane), 'batch' if it has none.
INSERT INTO jobs (job_id, document_id, stage, trigger_event_id, trigger_position, params, max_attempts, lane)
VALUES ($1, $2, $3, $4, $5, $6, $7,
        CASE
            WHEN $8::text = 'interactive' THEN
                CASE WHEN (SELECT count(*) FROM (SELECT 1 FROM jobs
                                                 WHERE stage = 'convert' AND status = 'queued' AND lane = 'interactive'
                                                 LIMIT $9) AS waiting) >= $9
                     THEN 'batch' ELSE 'interactive' END
            WHEN $8::text IS NOT NULL THEN $8::text
            ELSE coalesce((SELECT lane FROM jobs WHERE document_id = $2 ORDER BY trigger_position DESC LIMIT 1),
                          'batch')
        END)
ON CONFLICT (job_id) DO NOTHING;

-- name: claim
-- One claim, one round trip: the best claimable job among the stages $1 (listed in the order to prefer
-- them: furthest along first), the lane $5 first (NULL: no lane goes first), then oldest first; with it
-- up to $4 - 1 more jobs of the same stage when that stage is one of $6 (embed jobs run several to a
-- slot), the lane $5 first again.
-- FOR UPDATE SKIP LOCKED: concurrent workers each take different rows without waiting on each
-- other. A 'running' job whose lease expired belongs to a worker that died: take it over.
WITH first AS (
    SELECT job_id, stage FROM jobs
    WHERE stage = ANY ($1::text[])
      AND ((status = 'queued' AND not_before <= now())
           OR (status = 'running' AND lease_until < now()))
    ORDER BY lane IS DISTINCT FROM $5::text, array_position($1::text[], stage), not_before, trigger_position
    FOR UPDATE SKIP LOCKED
    LIMIT 1
), more AS (
    SELECT job_id FROM jobs
    WHERE stage = (SELECT stage FROM first) AND stage = ANY ($6::text[])
      AND job_id <> (SELECT job_id FROM first)
      AND ((status = 'queued' AND not_before <= now())
           OR (status = 'running' AND lease_until < now()))
    ORDER BY lane IS DISTINCT FROM $5::text, not_before, trigger_position
    FOR UPDATE SKIP LOCKED
    LIMIT greatest($4 - 1, 0)
)
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,
       lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE job_id IN (SELECT job_id FROM first UNION ALL SELECT job_id FROM more)
RETURNING job_id, document_id, stage, trigger_event_id, trigger_position, params, attempts, max_attempts, lane;

-- name: claim_interactive
-- The express slot's claim (app/pipeline/worker.py: taken only while every ordinary slot holds a batch
-- job): the oldest ready interactive-lane job among the stages $1 (furthest along first), with up to
-- $4 - 1 more of the same stage when that stage is one of $5. Queued jobs only (an expired lease is the
-- ordinary slots' to take over), so the partial index jobs_interactive_queued_idx answers it.
WITH first AS (
    SELECT job_id, stage FROM jobs
    WHERE stage = ANY ($1::text[]) AND status = 'queued' AND lane = 'interactive' AND not_before <= now()
    ORDER BY array_position($1::text[], stage), not_before, trigger_position
    FOR UPDATE SKIP LOCKED
    LIMIT 1
), more AS (
    SELECT job_id FROM jobs
    WHERE stage = (SELECT stage FROM first) AND stage = ANY ($5::text[])
      AND job_id <> (SELECT job_id FROM first)
      AND status = 'queued' AND lane = 'interactive' AND not_before <= now()
    ORDER BY not_before, trigger_position
    FOR UPDATE SKIP LOCKED
    LIMIT greatest($4 - 1, 0)
)
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,
       lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE job_id IN (SELECT job_id FROM first UNION ALL SELECT job_id FROM more)
RETURNING job_id, document_id, stage, trigger_event_id, trigger_position, params, attempts, max_attempts, lane;

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
    ORDER BY j.lane <> 'interactive', j.not_before, j.trigger_position
    FOR UPDATE OF j SKIP LOCKED
    LIMIT $3
)
RETURNING job_id, document_id, stage, trigger_event_id, trigger_position, params, attempts, max_attempts, lane;

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
