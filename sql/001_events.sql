-- The event log: the single source of truth. Append-only; every other table is a projection.
--
-- Gap-free reading (see events/subscription.py for the full argument):
--   positions come from an identity sequence, handed out before commit, so transactions commit
--   out of position order. Every row therefore records the id of the transaction that wrote it
--   (tx_id = pg_current_xact_id()). Subscribers read in (tx_id, position) order and only rows
--   whose tx_id is below pg_snapshot_xmin(pg_current_snapshot()) -- i.e. rows written by
--   transactions that can no longer be in progress. Any row that becomes visible later belongs
--   to a transaction with tx_id >= that xmin, so it sorts after every row already delivered.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL CHECK (stream_version > 0),
    type           text        NOT NULL,
    schema_version integer     NOT NULL DEFAULT 1,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_tx_position_idx ON events (tx_id, position);

COMMENT ON TABLE events IS 'Append-only event log. Updates and deletes are refused by trigger.';
COMMENT ON COLUMN events.tx_id IS 'Writing transaction id; subscribers read in (tx_id, position) order below the snapshot xmin.';

-- Appends only: the database itself refuses UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'CH002', HINT = 'append a compensating event instead';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Wake-up for listeners. NOTIFY is only a wake-up (readers always re-read from their checkpoint)
-- and it serialises committing transactions database-wide, so the application's own connections
-- set chronos.app_notifier = 'on' and notify once per batch of commits from one process
-- (events/notifier.py). Any other writer gets one notification per statement, carrying only the
-- highest position written.
CREATE FUNCTION events_notify_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('chronos.app_notifier', true), '') <> 'on' THEN
        PERFORM pg_notify('chronos_events', (SELECT max(position)::text FROM new_rows));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify_v1();

-- Durable, named subscription checkpoints: the (tx_id, position) of the last event handled.
CREATE TABLE subscriptions (
    name        text PRIMARY KEY,
    tx_id       xid8        NOT NULL DEFAULT '0'::xid8,
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
