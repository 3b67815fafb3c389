-- Starting an attempt (services/ledger/attempts.py write_bookkeeping, once per job a worker starts)
-- without two reads of the job's attempts that the job row already answers.
--
-- The new attempt's number was max(try) + 1 over the job's attempts, read by the INSERT. The
-- job row, read FOR UPDATE first, has it: its `tries` is the number of the last attempt, set by
-- this function, the only one that inserts attempts, in the same transaction as that attempt's
-- INSERT and under the same row lock. The UPDATE that closes an attempt left open by a dead
-- worker is only run when there is an earlier attempt (`tries` > 0): a job's first start, the
-- common case, has nothing to close.
--
-- The worker's bookkeeping costs Postgres less CPU per job this way; docs/performance.md
-- has the measurements.
--
-- The semantics are those of 0007 (tests/unit/test_ledger.py pins them): NULL previous and
-- attempt 0 for an unknown job, attempt 0 for a final one, an open attempt closed as
-- 'interrupted' with crash_rerun, concurrent starts of one job numbered one after the other.

CREATE OR REPLACE FUNCTION afterword_start_attempt(p_job text, p_worker text,
                                                   OUT previous text, OUT request_id text,
                                                   OUT attempt integer, OUT crash_rerun boolean)
LANGUAGE plpgsql AS $$
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
