-- Stage work queue. Jobs are derived from the log by the dispatcher subscription (one job per
-- event that asks for work: DocumentUploaded -> convert, DocumentConverted -> chunk, ...). A job is
-- held by one worker at a time under a lease; a killed worker's job is claimed again once its lease
-- expires. A job's result events and its 'done' mark commit in one transaction, so "done" always
-- means "recorded in the log".
CREATE TABLE jobs (
    job_id           uuid PRIMARY KEY,
    document_id      uuid        NOT NULL,
    stage            text        NOT NULL CHECK (stage IN ('convert', 'chunk', 'embed')),
    trigger_event_id uuid        NOT NULL,
    trigger_position bigint      NOT NULL,
    params           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 4,
    not_before       timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_until      timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX jobs_claimable_idx ON jobs (stage, not_before) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_document_idx ON jobs (document_id);

-- Find an earlier conversion of the same content with the same settings (reuse instead of
-- converting again), and earlier uploads of the same content.
CREATE INDEX events_converted_input_idx ON events ((data ->> 'input_sha256'), (data ->> 'settings_hash'))
    WHERE type = 'DocumentConverted';
