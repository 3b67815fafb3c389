-- Live job status (services/gateway/live/job_events.py): every time a job's status is written, the new
-- status is announced on the 'afterword_job_status' channel, delivered when the transaction commits.
-- The gateway LISTENs on one connection and wakes the long-polls (GET /jobs/{id}?wait=N) and the
-- event streams (GET /jobs/{id}/events) of that job.
--
-- The payload carries what an event shows, so that a listener sees each status in order even when
-- the next one is already committed: id, status, tries, error (its first 1000 characters; a
-- notification holds at most 8000 bytes) and `at`, the row's updated_at in UTC, which only grows
-- for a given job (its writes are serialized by the row lock).

CREATE FUNCTION afterword_notify_job_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'afterword_job_status',
        json_build_object(
            'id', NEW.id,
            'status', NEW.status,
            'tries', NEW.tries,
            'error', left(NEW.error, 1000),
            'at', to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
        )::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_status_notify
AFTER INSERT OR UPDATE OF status ON jobs
FOR EACH ROW EXECUTE FUNCTION afterword_notify_job_status();

-- GET /stats: jobs finished per minute, and the first attempts started in the window.
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX job_attempts_first_started_at ON job_attempts (started_at) WHERE try = 1;
