-- Transactional enqueue: an application that writes its own rows in this database queues a job in
-- the same transaction, from any language, with
--
--   SELECT afterword_enqueue('send_email', '{"to": "ada@example.com", ...}'::jsonb);
--
-- which returns the job's id. The job's row is written as the gateway writes one (services/ledger
-- insert_jobs): status 'queued', or 'deferred' with p_defer_by (seconds) or a p_run_at in the
-- future; run_at; an id of 32 lowercase hex digits, a uuid4 as the gateway makes them. The row is
-- the job: it commits or rolls back with the caller's transaction. So does the NOTIFY on
-- 'afterword_enqueued' (Postgres delivers notifications at commit, and drops those of a
-- transaction that rolls back); every jobs worker listens there and pushes the job to Redis at
-- once (services/jobs/relay.py), and the recovery sweep queues any row a worker missed.
--
-- job_kinds holds the jobs the workers run, with their payload's field names: the migrator and
-- every worker at its start write them from services/contract.py (services/ledger/job_kinds.py),
-- and never delete one (a worker of an earlier release may still run it). An unknown job name, a
-- payload that is not a JSON object, a field the job does not have or a required field missing is
-- refused inside the caller's transaction, SQLSTATE 22023 (invalid_parameter_value), the message
-- naming the name or the field. The values themselves are checked by the worker against the
-- payload model: one that fails fails the job at once (status 'failed', its error naming the
-- field), as a planted or hand-edited payload would.
--
-- A transaction that notifies takes an instance-wide lock at its commit (see 0008): commits that
-- enqueue this way are serialized with one another.

CREATE TABLE job_kinds (
    name text PRIMARY KEY,
    fields text[],                       -- NULL: the payload may have any field
    required text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION afterword_enqueue(p_name text, p_payload jsonb DEFAULT '{}'::jsonb,
                                  p_run_at timestamptz DEFAULT NULL,
                                  p_defer_by double precision DEFAULT NULL,
                                  p_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    kind job_kinds%ROWTYPE;
    now_ timestamptz := clock_timestamp();
    due timestamptz;
    job_id text;
    wrong text;
BEGIN
    SELECT * INTO kind FROM job_kinds k WHERE k.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'afterword_enqueue: unknown job name %; known: %', quote_nullable(p_name),
            (SELECT coalesce(string_agg(k.name, ', ' ORDER BY k.name), 'none') FROM job_kinds k)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION 'afterword_enqueue: the payload of % must be a JSON object, not %', p_name,
            coalesce(jsonb_typeof(p_payload), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind.fields IS NOT NULL THEN
        SELECT string_agg(f, ', ' ORDER BY f) INTO wrong
        FROM jsonb_object_keys(p_payload) AS f WHERE f <> ALL (kind.fields);
        IF wrong IS NOT NULL THEN
            RAISE EXCEPTION 'afterword_enqueue: % has no field(s) %; its fields: %', p_name, wrong,
                array_to_string(kind.fields, ', ')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    SELECT string_agg(f, ', ' ORDER BY f) INTO wrong FROM unnest(kind.required) AS f WHERE NOT p_payload ? f;
    IF wrong IS NOT NULL THEN
        RAISE EXCEPTION 'afterword_enqueue: the payload of % lacks the required field(s) %', p_name, wrong
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_run_at IS NOT NULL AND p_defer_by IS NOT NULL THEN
        RAISE EXCEPTION 'afterword_enqueue: give p_run_at or p_defer_by, not both'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As the gateway's defer_by: 0 to 7 days (NaN compares greater than any number).
    IF p_defer_by < 0 OR p_defer_by > 604800 THEN
        RAISE EXCEPTION 'afterword_enqueue: p_defer_by must be 0 to 604800 seconds (7 days), not %', p_defer_by
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    due := coalesce(p_run_at, now_ + make_interval(secs => coalesce(p_defer_by, 0)));
    IF due > now_ + interval '7 days' THEN
        RAISE EXCEPTION 'afterword_enqueue: p_run_at must be at most 7 days ahead, not %', p_run_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_id IS NOT NULL AND p_id !~ '^[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'afterword_enqueue: p_id must be 32 lowercase hex digits, not %', quote_literal(p_id)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job_id := coalesce(p_id, replace(gen_random_uuid()::text, '-', ''));
    INSERT INTO jobs (id, name, payload, status, run_at, enqueued_at, updated_at)
    VALUES (job_id, p_name, p_payload, CASE WHEN due > now_ THEN 'deferred' ELSE 'queued' END,
            greatest(due, now_), now_, now_);
    PERFORM pg_notify('afterword_enqueued', job_id);
    RETURN job_id;
END;
$$;
