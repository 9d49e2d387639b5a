-- API tokens for the web UI and REST API (`amdahl tokens create`): only a SHA-256 of each
-- token is kept; the token itself is shown once, when it is made.
CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    revoked_at_ms BIGINT
);
