-- Fencing by attempt (services/ledger/attempts.py keep_books): a worker whose claim on a job was superseded
-- (paused, stalled or cut off past its lease while another worker took the job over) changes
-- nothing in the ledger.
--
-- Every claim of a job counts ARQ's try (arq:retry:<id>, incremented by the claim in Redis), which
-- only grows while the job lives in ARQ. Each attempt now records the try of the claim that
-- started it (job_try). A start whose try is not ahead of the running attempt's (or of the try
-- that ended in the job's pending retry) comes from a claim that lost its lease before its start
-- reached the ledger: it is refused and opens nothing, and `superseded_by` says which try holds
-- the job. Ends and effects are fenced by the statement that writes them (ledger.py): an end is
-- written only while its attempt is the job's current, open one.
--
-- After Redis lost a job and its try count (restart without persistence, FLUSHALL) a new claim
-- counts from 1 again: its start is refused once, and the worker sets the count past
-- `superseded_by` before it lets the job go (services/queue/leases.py), so the next claim starts.
-- A start without a try (NULL: an older worker) closes any open attempt, as before.

ALTER TABLE job_attempts ADD COLUMN job_try integer;

CREATE FUNCTION afterword_start_attempt(p_job text, p_worker text, p_job_try integer,
                                        OUT previous text, OUT request_id text,
                                        OUT attempt integer, OUT crash_rerun boolean,
                                        OUT superseded_by integer)
LANGUAGE plpgsql AS $$
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
