-- The current schema: what migrations 0001 to 0012 build in an empty database, as pg_dump prints it.
-- Written by `make schema` (python -m services.ledger.schema_dump); do not edit it by hand.
-- For reading and review only: databases are built by the migrations (make migrate).

CREATE FUNCTION public.afterword_enqueue(p_name text, p_payload jsonb DEFAULT '{}'::jsonb, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_defer_by double precision DEFAULT NULL::double precision, p_id text DEFAULT NULL::text) RETURNS text
    LANGUAGE plpgsql
    AS $_$
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
$_$;

CREATE FUNCTION public.afterword_job_counts(p_statuses text[], p_exact_limit bigint) RETURNS TABLE(status text, jobs bigint, estimated boolean)
    LANGUAGE plpgsql
    AS $$
DECLARE
    plan json;
BEGIN
    FOREACH status IN ARRAY p_statuses LOOP
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM jobs WHERE status = %L', status) INTO plan;
        jobs := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint;
        estimated := jobs > p_exact_limit;
        IF NOT estimated THEN
            EXECUTE format('SELECT count(*) FROM jobs WHERE status = %L', status) INTO jobs;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

CREATE FUNCTION public.afterword_notify_watched_jobs() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM job_watchers) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify(
        'afterword_job_status',
        json_build_object(
            'id', n.id,
            'status', n.status,
            'tries', n.tries,
            'error', left(n.error, 1000),
            'at', to_char(n.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
        )::text
    )
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (n.status, n.tries, n.error) IS DISTINCT FROM (o.status, o.tries, o.error)
      AND EXISTS (SELECT FROM job_watchers w WHERE w.job_id = n.id)
    ORDER BY n.updated_at, n.id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION public.afterword_start_attempt(p_job text, p_worker text, OUT previous text, OUT request_id text, OUT attempt integer, OUT crash_rerun boolean) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
    closed integer;
    due timestamptz;
    prior integer;
BEGIN
    attempt := 0;
    crash_rerun := false;
    SELECT j.status, j.request_id, j.run_at, j.tries INTO previous, request_id, due, prior
    FROM jobs j WHERE j.id = p_job FOR UPDATE;
    IF NOT FOUND OR previous IN ('succeeded', 'failed', 'cancelled') THEN
        RETURN;
    END IF;
    IF prior > 0 THEN
        UPDATE job_attempts SET outcome = 'interrupted', finished_at = clock_timestamp(),
                                error = 'the worker stopped before the attempt ended'
        WHERE job_id = p_job AND outcome IS NULL;
        GET DIAGNOSTICS closed = ROW_COUNT;
        crash_rerun := closed > 0;
    END IF;
    attempt := prior + 1;
    INSERT INTO job_attempts (job_id, try, worker, due_at) VALUES (p_job, attempt, p_worker, due);
    UPDATE jobs SET status = 'in_progress', tries = attempt, started_at = clock_timestamp(),
                    finished_at = NULL, updated_at = clock_timestamp()
    WHERE id = p_job;
END;
$$;

CREATE FUNCTION public.afterword_start_attempt(p_job text, p_worker text, p_job_try integer, OUT previous text, OUT request_id text, OUT attempt integer, OUT crash_rerun boolean, OUT superseded_by integer) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
    closed integer;
    due timestamptz;
    prior integer;
    last_try integer;
    last_outcome text;
BEGIN
    attempt := 0;
    crash_rerun := false;
    SELECT j.status, j.request_id, j.run_at, j.tries INTO previous, request_id, due, prior
    FROM jobs j WHERE j.id = p_job FOR UPDATE;
    IF NOT FOUND OR previous IN ('succeeded', 'failed', 'cancelled') THEN
        RETURN;
    END IF;
    IF prior > 0 THEN
        SELECT a.job_try, a.outcome INTO last_try, last_outcome
        FROM job_attempts a WHERE a.job_id = p_job AND a.try = prior;
        IF p_job_try IS NOT NULL AND last_try >= p_job_try
           AND (last_outcome IS NULL OR (last_outcome = 'retrying' AND previous = 'retrying')) THEN
            superseded_by := last_try;
            RETURN;
        END IF;
        UPDATE job_attempts SET outcome = 'interrupted', finished_at = clock_timestamp(),
                                error = 'the worker stopped before the attempt ended'
        WHERE job_id = p_job AND outcome IS NULL;
        GET DIAGNOSTICS closed = ROW_COUNT;
        crash_rerun := closed > 0;
    END IF;
    attempt := prior + 1;
    INSERT INTO job_attempts (job_id, try, worker, due_at, job_try) VALUES (p_job, attempt, p_worker, due, p_job_try);
    UPDATE jobs SET status = 'in_progress', tries = attempt, started_at = clock_timestamp(),
                    finished_at = NULL, updated_at = clock_timestamp()
    WHERE id = p_job;
END;
$$;

CREATE FUNCTION public.afterword_watch_job(p_job text, p_watch text, p_listener integer) RETURNS TABLE(id text, status text, tries integer, error text, updated_at timestamp with time zone)
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO job_watchers (watch_id, job_id, listener_pid) VALUES (p_watch, p_job, p_listener)
    ON CONFLICT (watch_id) DO UPDATE SET listener_pid = EXCLUDED.listener_pid;
    RETURN QUERY
        SELECT j.id, j.status, j.tries, j.error, j.updated_at FROM jobs j WHERE j.id = p_job FOR SHARE;
END;
$$;

CREATE TABLE public.idempotency_keys (
    key text NOT NULL,
    fingerprint text NOT NULL,
    response_status integer NOT NULL,
    response_headers jsonb NOT NULL,
    response_body bytea NOT NULL,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    scope text NOT NULL,
    CONSTRAINT idempotency_keys_key_check CHECK (((length(key) >= 1) AND (length(key) <= 255))),
    CONSTRAINT idempotency_keys_scope_check CHECK (((scope = ''::text) OR (scope ~ '^[0-9a-f]{64}$'::text)))
);

COMMENT ON COLUMN public.idempotency_keys.created_at IS 'When the key and its response were recorded; the row expires 24 hours later';

COMMENT ON COLUMN public.idempotency_keys.scope IS 'SHA-256 (hex) of the API key that used the key; empty when the gateway runs without API keys';

CREATE TABLE public.job_attempts (
    job_id text NOT NULL,
    try integer NOT NULL,
    worker text NOT NULL,
    started_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    finished_at timestamp with time zone,
    outcome text,
    error text,
    due_at timestamp with time zone,
    job_try integer,
    CONSTRAINT job_attempts_outcome_check CHECK ((outcome = ANY (ARRAY['succeeded'::text, 'failed'::text, 'retrying'::text, 'interrupted'::text, 'cancelled'::text])))
);

CREATE TABLE public.job_effects (
    job_id text NOT NULL,
    effect text NOT NULL,
    detail jsonb,
    done_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL
);

CREATE TABLE public.job_kinds (
    name text NOT NULL,
    fields text[],
    required text[] DEFAULT '{}'::text[] NOT NULL,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL
);

CREATE UNLOGGED TABLE public.job_watchers (
    watch_id text NOT NULL,
    job_id text NOT NULL,
    listener_pid integer NOT NULL,
    since timestamp with time zone DEFAULT clock_timestamp() NOT NULL
);

CREATE TABLE public.jobs (
    id text NOT NULL,
    name text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL,
    tries integer DEFAULT 0 NOT NULL,
    result jsonb,
    error text,
    request_id text,
    enqueued_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    run_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT jobs_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'deferred'::text, 'in_progress'::text, 'retrying'::text, 'succeeded'::text, 'failed'::text, 'cancelled'::text])))
);

CREATE TABLE public.schema_migrations (
    version text NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.users (
    id bigint NOT NULL,
    email text NOT NULL,
    name text,
    welcome_email_sent_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE public.users ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.users_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

ALTER TABLE ONLY public.idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key);

ALTER TABLE ONLY public.job_attempts
    ADD CONSTRAINT job_attempts_pkey PRIMARY KEY (job_id, try);

ALTER TABLE ONLY public.job_effects
    ADD CONSTRAINT job_effects_pkey PRIMARY KEY (job_id, effect);

ALTER TABLE ONLY public.job_kinds
    ADD CONSTRAINT job_kinds_pkey PRIMARY KEY (name);

ALTER TABLE ONLY public.job_watchers
    ADD CONSTRAINT job_watchers_pkey PRIMARY KEY (watch_id);

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_email_key UNIQUE (email);

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);

CREATE INDEX idempotency_keys_created_at ON public.idempotency_keys USING btree (created_at);

CREATE INDEX job_attempts_first_started_at ON public.job_attempts USING btree (started_at) WHERE (try = 1);

CREATE INDEX job_watchers_job_id ON public.job_watchers USING btree (job_id);

CREATE INDEX jobs_finished_at ON public.jobs USING btree (finished_at) WHERE (finished_at IS NOT NULL);

CREATE INDEX jobs_name_enqueued_at ON public.jobs USING btree (name, enqueued_at DESC);

CREATE INDEX jobs_status_enqueued_at ON public.jobs USING btree (status, enqueued_at DESC);

CREATE TRIGGER jobs_status_notify AFTER UPDATE ON public.jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.afterword_notify_watched_jobs();

ALTER TABLE ONLY public.job_attempts
    ADD CONSTRAINT job_attempts_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.jobs(id) ON DELETE CASCADE;
