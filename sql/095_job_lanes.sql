-- Priority lanes for the stage work queue (issue 16.3): a small upload someone waits for must not queue
-- behind a 200-document batch at every stage. Each job is in a lane, decided when it is enqueued
-- (app/pipeline/lanes.py says how): 'interactive' (a single small upload from the API, the CLI or a
-- Directus hook, and the later stages of its document) or 'batch' (a folder ingest or sync, a
-- reprocess, a large upload, uploads beyond the interactive lane's depth). Workers claim the
-- interactive lane first, with a bounded share for the batch lane so a batch is never starved.
-- Jobs queued before this migration are 'batch' (the order they had: oldest first).
ALTER TABLE jobs ADD COLUMN lane text NOT NULL DEFAULT 'batch' CHECK (lane IN ('interactive', 'batch'));

-- The depth of the interactive lane (counted at each enqueue of an upload's convert job).
CREATE INDEX jobs_interactive_queued_idx ON jobs (stage) WHERE status = 'queued' AND lane = 'interactive';

-- Who waits in which lane, for people and dashboards: ready and running jobs per lane and stage, and
-- how long the oldest ready job of each has waited.
CREATE VIEW v_job_lanes AS
SELECT lane, stage,
       count(*) FILTER (WHERE status = 'queued' AND not_before <= now()) AS ready,
       count(*) FILTER (WHERE status = 'queued' AND not_before > now()) AS backing_off,
       count(*) FILTER (WHERE status = 'running') AS running,
       extract(epoch FROM now() - min(not_before) FILTER (WHERE status = 'queued' AND not_before <= now()))
           ::double precision AS oldest_ready_s
FROM jobs
WHERE status IN ('queued', 'running')
GROUP BY lane, stage;
