-- Starting an attempt in one round trip (services/ledger/attempts.py): the same four
-- statements the worker used to send one by one in a transaction, now run by the server. Each
-- statement of a PL/pgSQL function takes a fresh snapshot, as the separate statements did, so a
-- worker that waited for the row lock sees the attempts committed meanwhile.
--
-- Returns the job's status before this start (NULL for a job the ledger does not know, such as
-- a cron run), its request id, the new attempt's number (0 when nothing was started: unknown
-- job, or a job already final) and whether an attempt left open by a dead worker was closed.

CREATE FUNCTION afterword_start_attempt(p_job text, p_worker text,
                                        OUT previous text, OUT request_id text,
                                        OUT attempt integer, OUT crash_rerun boolean)
LANGUAGE plpgsql AS $$
DECLARE
    closed integer;
BEGIN
    attempt := 0;
    crash_rerun := false;
    SELECT j.status, j.request_id INTO previous, request_id FROM jobs j WHERE j.id = p_job FOR UPDATE;
    IF NOT FOUND OR previous IN ('succeeded', 'failed', 'cancelled') THEN
        RETURN;
    END IF;
    UPDATE job_attempts SET outcome = 'interrupted', finished_at = clock_timestamp(),
                            error = 'the worker stopped before the attempt ended'
    WHERE job_id = p_job AND outcome IS NULL;
    GET DIAGNOSTICS closed = ROW_COUNT;
    crash_rerun := closed > 0;
    INSERT INTO job_attempts (job_id, try, worker)
    SELECT p_job, COALESCE(max(a.try), 0) + 1, p_worker FROM job_attempts a WHERE a.job_id = p_job
    RETURNING try INTO attempt;
    UPDATE jobs SET status = 'in_progress', tries = attempt, started_at = clock_timestamp(),
                    finished_at = NULL, updated_at = clock_timestamp()
    WHERE id = p_job;
END;
$$;
