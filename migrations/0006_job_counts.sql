-- GET /stats, jobs per status (services/ledger/stats.py), without reading the whole ledger.
--
-- The ledger keeps ended jobs for JOB_RETENTION_DAYS (30 by default): counting each status with
-- count(*) read every row on every call, about 0.1 s per million rows on our 2-core VM, and the
-- dashboard asks every 2 s. For each status this asks the planner first how many rows it
-- expects (its statistics, which autovacuum's ANALYZE keeps up to date, scaled to the table's
-- current size: no row is read). A status expected to have at most p_exact_limit rows is then
-- counted exactly, through the jobs_status_enqueued_at index; a larger one is reported as the
-- estimate, with estimated = true.
--
-- Both statements are built with the status as a literal and planned on each call, so that the
-- planner sees the value (a prepared statement with a parameter would get a generic plan, which
-- may read the whole table).

CREATE FUNCTION afterword_job_counts(p_statuses text[], p_exact_limit bigint)
RETURNS TABLE (status text, jobs bigint, estimated boolean)
LANGUAGE plpgsql AS $$
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
