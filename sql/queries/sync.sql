-- Queries of source sync (app/services/sync.py).

-- name: streams_with_key_prefix
-- Documents ever uploaded under a key that starts with $1 (events_upload_key_idx).
SELECT DISTINCT (data ->> 'document_id')::uuid AS document_id
FROM events
WHERE type = 'DocumentUploaded' AND data ->> 'key' LIKE replace(replace(replace($1, '\', '\\'), '%', '\%'), '_', '\_') || '%';
