-- Queries of the API tokens (projections/tokens.py, app/services/tokens.py).

-- name: insert
INSERT INTO api_tokens (token_id, name, scope, token_sha256, collections, created_at, created_by, stream_version)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (token_id) DO NOTHING;

-- name: revoke
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2), revoke_reason = coalesce(revoke_reason, $3),
       stream_version = greatest(stream_version, $4)
WHERE token_id = $1::uuid;

-- name: by_hash
SELECT token_id, name, scope, collections, revoked_at FROM api_tokens WHERE token_sha256 = $1;

-- name: list
SELECT token_id, name, scope, collections, created_at, created_by, revoked_at, revoke_reason
FROM api_tokens ORDER BY created_at;

-- name: get
SELECT token_id, name, scope, revoked_at FROM api_tokens WHERE token_id = $1::uuid;
