-- The live status trigger (0003) announced every INSERT too. Nobody can be waiting on a job whose
-- row is being inserted (its id is first known from the 202 that follows the commit), so those
-- notifications were read by the gateway and dropped, and each one made the INSERT's commit take
-- Postgres' notification queue lock, which the workers' status commits wait on as well. Only
-- status changes are announced now.

DROP TRIGGER jobs_status_notify ON jobs;

CREATE TRIGGER jobs_status_notify
AFTER UPDATE OF status ON jobs
FOR EACH ROW EXECUTE FUNCTION afterword_notify_job_status();
