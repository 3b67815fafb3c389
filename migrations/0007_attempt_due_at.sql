-- Pickup latency in GET /stats (services/ledger/stats.py) without joining every first attempt of the
-- window to its job: each attempt records when its job was due (the job's run_at, read by the
-- start from the row it already locks). The figures are the same, the query reads one table
-- instead of two, and the start does no extra read. docs/performance.md has the measurements.
--
-- The due time is the one the attempt started against: a job run again by POST /jobs/{id}/retry
-- gets a new run_at, and its first attempt keeps the old one. Attempts started before this
-- migration have no due time (NULL) and are left out of the pickup figures.

ALTER TABLE job_attempts ADD COLUMN due_at timestamptz;

CREATE OR REPLACE FUNCTION afterword_start_attempt(p_job text, p_worker text,
                                                   OUT previous text, OUT request_id text,
                                                   OUT attempt integer, OUT crash_rerun boolean)
LANGUAGE plpgsql AS $$
DECLARE
    closed integer;
    due timestamptz;
BEGIN
    attempt := 0;
    crash_rerun := false;
    SELECT j.status, j.request_id, j.run_at INTO previous, request_id, due FROM jobs j WHERE j.id = p_job FOR UPDATE;
    IF NOT FOUND OR previous IN ('succeeded', 'failed', 'cancelled') THEN
        RETURN;
    END IF;
    UPDATE job_attempts SET outcome = 'interrupted', finished_at = clock_timestamp(),
                            error = 'the worker stopped before the attempt ended'
    WHERE job_id = p_job AND outcome IS NULL;
    GET DIAGNOSTICS closed = ROW_COUNT;
    crash_rerun := closed > 0;
    INSERT INTO job_attempts (job_id, try, worker, due_at)
    SELECT p_job, COALESCE(max(a.try), 0) + 1, p_worker, due FROM job_attempts a WHERE a.job_id = p_job
    RETURNING try INTO attempt;
    UPDATE jobs SET status = 'in_progress', tries = attempt, started_at = clock_timestamp(),
                    finished_at = NULL, updated_at = clock_timestamp()
    WHERE id = p_job;
END;
$$;
