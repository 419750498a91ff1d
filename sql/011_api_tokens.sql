-- API tokens (app/services/tokens.py), a projection of ApiTokenCreated / ApiTokenRevoked (streams
-- token-<id>): only each token's sha256 is kept. CHRONOS_API_TOKENS stays as the bootstrap (admin).
CREATE TABLE api_tokens (
    token_id       uuid PRIMARY KEY,
    name           text        NOT NULL,
    scope          text        NOT NULL,
    token_sha256   text        NOT NULL UNIQUE,
    collections    text[],
    created_at     timestamptz NOT NULL,
    created_by     text,
    revoked_at     timestamptz,
    revoke_reason  text,
    stream_version integer     NOT NULL
);
