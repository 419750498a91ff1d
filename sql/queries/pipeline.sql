-- name: stream_tails
-- The events each stream gained after a known version ($1 streams, $2 their versions), in stream
-- order: `chronos ingest --wait` folds only what is new.
SELECT e.position, e.tx_id::text::bigint AS tx_id, e.event_id, e.stream_id, e.stream_version, e.type,
       e.schema_version, e.data, e.metadata, e.recorded_at
FROM events e
JOIN unnest($1::text[], $2::integer[]) AS k(stream_id, version)
  ON e.stream_id = k.stream_id AND e.stream_version > k.version
ORDER BY e.stream_id, e.stream_version;
