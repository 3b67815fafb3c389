-- Live status (services/gateway/live/job_events.py) announces only the changes of jobs somebody waits
-- on. Until now every status change was announced, and a transaction that NOTIFYs takes one lock
-- for the whole Postgres instance at its commit and holds it through the commit's WAL flush
-- (PreCommit_Notify: "queue entries appear in commit order"), so every commit of every worker
-- queued on it. Measured with pgbench on this schema (2 vCPUs, 200,000 jobs; each transaction
-- one UPDATE of 10 jobs' status, as a worker's batch of ends; 4 s per run, two rounds), in
-- commits per second at 1, 4 and 16 clients:
--   no trigger                          1,701-2,018   3,741-3,757   4,623-4,717
--   0005's trigger (every change)       1,524-1,534   2,543-2,727   2,068-2,392
--   this one (no job watched)           1,430-1,798   2,910-3,558   4,193-4,338
-- With 0005's, more clients got fewer commits through.
--
-- A waiter (a long-poll or an event stream) now registers its job in job_watchers before it reads
-- the job, and the trigger announces a change only when the job has a watcher. The trigger is
-- per statement: when nobody waits on anything it costs one look at an empty table per UPDATE.
--
-- No change is lost. The waiter's registration and its read are one transaction, and the read
-- takes a share lock on the job row (afterword_watch_job). A writer whose trigger ran before the
-- registration committed holds the row's lock until its own commit, so the read waits for it and
-- returns what it wrote; a writer that locks the row later runs its trigger after the
-- registration committed, and sees it (the trigger's query takes a new snapshot under READ
-- COMMITTED, the isolation every writer of jobs uses).
--
-- The table is UNLOGGED: a registration is worth nothing after a crash, when every listening
-- connection is gone too (the gateway's waiters register again when their listener reconnects).
-- Each row names the listening connection it belongs to (listener_pid, its backend's pid); the
-- gateway deletes a waiter's row when it stops waiting, and the rows of connections that no longer
-- exist (a gateway that died) every few seconds.

CREATE UNLOGGED TABLE job_watchers (
    watch_id     text PRIMARY KEY,
    job_id       text NOT NULL,
    listener_pid integer NOT NULL,
    since        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX job_watchers_job_id ON job_watchers (job_id);

-- Register the watch p_watch on job p_job, for the listening backend p_listener (again, after a
-- reconnection: the same watch under the new pid), and return the job's current status, read
-- under a share lock (see above); no row if the job is unknown. The registration is not worth a
-- WAL flush: the transaction commits without waiting for one.
CREATE FUNCTION afterword_watch_job(p_job text, p_watch text, p_listener integer)
RETURNS TABLE (id text, status text, tries integer, error text, updated_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO job_watchers (watch_id, job_id, listener_pid) VALUES (p_watch, p_job, p_listener)
    ON CONFLICT (watch_id) DO UPDATE SET listener_pid = EXCLUDED.listener_pid;
    RETURN QUERY
        SELECT j.id, j.status, j.tries, j.error, j.updated_at FROM jobs j WHERE j.id = p_job FOR SHARE;
END;
$$;

-- The payload is the one of 0003: id, status, tries, error (its first 1000 characters) and `at`.
-- A change is what a waiter can see: the status, the tries or the error. Several changes of one
-- statement are announced in the order they were written.
CREATE FUNCTION afterword_notify_watched_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
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

DROP TRIGGER jobs_status_notify ON jobs;
DROP FUNCTION afterword_notify_job_status();

CREATE TRIGGER jobs_status_notify
AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION afterword_notify_watched_jobs();
