-- Idempotency-Key of POST requests (services/gateway/middleware/idempotency.py): one row per key, claimed
-- ('processing') while its first request runs, then ('done') holding the response that a repeat
-- of the same request gets again. Rows older than 24 hours are ignored, and deleted lazily.

CREATE TABLE idempotency_keys (
    key text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 (hex) of the request's method, path and body: the same key with another request is refused.
    fingerprint text NOT NULL,
    status text NOT NULL CHECK (status IN ('processing', 'done')),
    -- A random token of the request holding the claim: only it may store the response or release the key.
    claim_token text NOT NULL,
    response_status integer,
    -- [[name, value], ...] as the app sent them (latin-1 text).
    response_headers jsonb,
    response_body bytea,
    -- When the key was claimed (again, after a take-over).
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (status = 'processing' OR (response_status IS NOT NULL AND response_headers IS NOT NULL
                                     AND response_body IS NOT NULL))
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
