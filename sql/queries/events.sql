-- name: append_one
-- One event. $2 = expected version (NULL = any). Returns no row when the stream is not at the
-- expected version or when the event id is already stored (the client tells the two apart).
-- Optimistic concurrency: two appenders that both saw version v race for (stream, v + 1) on the
-- unique key; the loser fails with unique_violation and writes nothing.
INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata)
SELECT $3, $1, cur.v + 1, $4, $5, $6, $7
FROM (SELECT coalesce(max(stream_version), 0) AS v FROM events WHERE stream_id = $1) AS cur
WHERE $2::integer IS NULL OR $2::integer = cur.v
ON CONFLICT (event_id) DO NOTHING
RETURNING position, stream_version;

-- name: append_one_plain
-- One event outside a transaction: as append_one without ON CONFLICT (speculative insertion costs
-- more than the rare idempotent retry, which fails on events_event_id_key and is explained by the
-- client). Inside a caller's transaction append_one is used (no savepoint needed).
INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata)
SELECT $3, $1, cur.v + 1, $4, $5, $6, $7
FROM (SELECT coalesce(max(stream_version), 0) AS v FROM events WHERE stream_id = $1) AS cur
WHERE $2::integer IS NULL OR $2::integer = cur.v
RETURNING position, stream_version;

-- name: append_many
-- A batch in one statement. Returns no row when the stream is not at the expected version; a
-- stored event id fails on events_event_id_key (the client then checks for an idempotent retry).
-- No ON CONFLICT here: speculative insertion per row costs ~10% on large batches.
WITH cur AS (
    SELECT coalesce(max(stream_version), 0) AS v FROM events WHERE stream_id = $1
), ok AS (
    SELECT v FROM cur WHERE $2::integer IS NULL OR $2::integer = v
)
INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, metadata)
SELECT i.event_id, $1, ok.v + i.ord::integer, i.type, i.schema_version, i.data, i.metadata
FROM ok, unnest($3::uuid[], $4::text[], $5::integer[], $6::jsonb[], $7::jsonb[])
     WITH ORDINALITY AS i(event_id, type, schema_version, data, metadata, ord)
ORDER BY i.ord
RETURNING position, stream_version;

-- name: existing_ids
SELECT event_id, stream_id, position, stream_version FROM events WHERE event_id = ANY ($1::uuid[]);

-- name: read_stream
SELECT position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_version, type, schema_version,
       data, metadata, recorded_at
FROM events
WHERE stream_id = $1 AND stream_version > $2
ORDER BY stream_version
LIMIT $3;

-- name: read_stream_after_position
SELECT position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_version, type, schema_version,
       data, metadata, recorded_at
FROM events
WHERE stream_id = $1 AND position > $2
ORDER BY stream_version
LIMIT $3;

-- name: read_all
-- Committed events by position, for replay and inspection. Not for tailing: a transaction that
-- commits later may still add a lower position (use read_safe for that).
SELECT position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_version, type, schema_version,
       data, metadata, recorded_at
FROM events
WHERE position > $1
ORDER BY position
LIMIT $2;

-- name: read_safe
-- Gap-free tail: rows after the (tx_id, position) cursor written by transactions older than every
-- transaction still in progress. See events/subscription.py.
SELECT position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_version, type, schema_version,
       data, metadata, recorded_at
FROM events
WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)
  AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY tx_id, position
LIMIT $3;

-- name: subscription_probe
-- After a subscription's cursor: is there an event read_safe would return (ready), and any committed
-- one at all (committed but not ready: held back by an open transaction)? No lock, no transaction.
SELECT EXISTS (SELECT 1 FROM events
               WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)
                 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())) AS ready,
       EXISTS (SELECT 1 FROM events WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)) AS committed;

-- name: stream_version
SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1;

-- name: head_position
SELECT coalesce(max(position), 0) FROM events;

-- name: notify
SELECT pg_notify($1, $2);

-- name: checkpoint_ensure
INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING;

-- name: checkpoint_lock
SELECT tx_id::text::bigint AS tx_id, position FROM subscriptions WHERE name = $1 FOR UPDATE;

-- name: checkpoint_get
SELECT tx_id::text::bigint AS tx_id, position FROM subscriptions WHERE name = $1;

-- name: commit_without_flush
-- This transaction's commit does not wait for its WAL flush (events/subscription.py, durable=False).
SELECT set_config('synchronous_commit', 'off', true);

-- name: checkpoint_set
UPDATE subscriptions SET tx_id = $2::text::xid8, position = $3, updated_at = now() WHERE name = $1;

-- name: checkpoint_reset
UPDATE subscriptions SET tx_id = '0'::xid8, position = 0, updated_at = now() WHERE name = $1;

-- name: checkpoint_try_lock
-- The subscription's checkpoint for one batch, or no row when another transaction holds it (another
-- process is applying a batch): that caller goes back to waiting instead of queueing on the lock
-- with a pool connection. No row also when the checkpoint does not exist yet (checkpoint_exists).
SELECT tx_id::text::bigint AS tx_id, position FROM subscriptions WHERE name = $1 FOR UPDATE SKIP LOCKED;

-- name: checkpoint_exists
SELECT EXISTS (SELECT 1 FROM subscriptions WHERE name = $1);
