-- Idempotency-Keys (services/gateway/middleware/idempotency.py, services/ledger/idempotency.py) are written
-- once, with the outcome of their request, in the same statement as the request's jobs
-- (services/ledger/jobs.py insert_jobs): a key's row and its jobs commit together or not at all.
--
-- A request in flight is no longer a committed 'processing' row, which outlived a gateway that
-- died mid-request (a retry got 409 until the claim was a minute old, then ran again although
-- the jobs were committed): the gateway holds a Postgres advisory lock for it on a session of its
-- own, and Postgres drops that lock when the session ends. So the rows left are all 'done', and
-- the claim columns go.
--
-- A key belongs to the API key that used it: `scope` is the SHA-256 (hex) of that API key, never
-- the key itself, or '' when the gateway runs without API keys (one scope shared by everyone).
-- Rows written before this migration are in scope ''.
--
-- Expired rows (older than 24 hours) are deleted by the worker's cron in batches
-- (services/jobs/setup.py purge_idempotency_keys), through the index on created_at.

DELETE FROM idempotency_keys WHERE status = 'processing';

ALTER TABLE idempotency_keys
    DROP COLUMN status,  -- with its checks
    DROP COLUMN claim_token,
    ADD COLUMN scope text NOT NULL DEFAULT '' CHECK (scope = '' OR scope ~ '^[0-9a-f]{64}$'),
    ALTER COLUMN response_status SET NOT NULL,
    ALTER COLUMN response_headers SET NOT NULL,
    ALTER COLUMN response_body SET NOT NULL,
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD PRIMARY KEY (scope, key);

ALTER TABLE idempotency_keys ALTER COLUMN scope DROP DEFAULT;

COMMENT ON COLUMN idempotency_keys.scope IS
    'SHA-256 (hex) of the API key that used the key; empty when the gateway runs without API keys';
COMMENT ON COLUMN idempotency_keys.created_at IS
    'When the key and its response were recorded; the row expires 24 hours later';
