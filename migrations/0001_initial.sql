-- Users created by /signup, and the jobs ledger: one row per job the gateway accepted.

CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text,
    welcome_email_sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id text PRIMARY KEY,
    name text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL CHECK (
        status IN ('queued', 'deferred', 'in_progress', 'retrying', 'succeeded', 'failed', 'cancelled')
    ),
    tries integer NOT NULL DEFAULT 0,
    result jsonb,
    error text,
    request_id text,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX jobs_status_enqueued_at ON jobs (status, enqueued_at DESC);
CREATE INDEX jobs_name_enqueued_at ON jobs (name, enqueued_at DESC);

-- Every start of a job, with how it ended.
CREATE TABLE job_attempts (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    try integer NOT NULL,
    worker text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome text CHECK (outcome IN ('succeeded', 'failed', 'retrying', 'interrupted', 'cancelled')),
    error text,
    PRIMARY KEY (job_id, try)
);

-- Side effects already done, keyed by job id, so that a re-run does not repeat them.
CREATE TABLE job_effects (
    job_id text NOT NULL,
    effect text NOT NULL,
    detail jsonb,
    done_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, effect)
);
