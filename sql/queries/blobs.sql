-- name: upload_begin
INSERT INTO blob_uploads (content_id) VALUES ($1);

-- name: chunk_put
INSERT INTO blob_chunks (content_id, seq, data) VALUES ($1, $2, $3);

-- name: publish
-- Publishes an upload under its hash; returns nothing when the same content was already stored.
INSERT INTO blobs (sha256, content_id, size, chunk_count, media_type)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (sha256) DO NOTHING
RETURNING sha256;

-- name: upload_end
DELETE FROM blob_uploads WHERE content_id = $1;

-- name: chunks_drop
DELETE FROM blob_chunks WHERE content_id = $1;

-- name: meta
SELECT sha256, content_id, size, chunk_count, media_type, created_at FROM blobs WHERE sha256 = $1;

-- name: chunk_get
SELECT data FROM blob_chunks WHERE content_id = $1 AND seq = $2;

-- name: delete
DELETE FROM blobs WHERE sha256 = $1 RETURNING content_id;

-- name: orphans
-- Chunks of uploads that never published and were started before the cutoff (crashed uploads).
SELECT u.content_id FROM blob_uploads u WHERE u.started_at < $1;
