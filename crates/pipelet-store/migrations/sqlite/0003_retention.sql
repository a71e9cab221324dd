-- Retention: a finished job's result and input blobs are deleted after `--result-ttl`
-- and its row after `--job-ttl`. `result_expired_at` records when the result was
-- deleted, so the status still says COMPLETED (and when it expired) and the result
-- answers 410 Gone. A deleted input is recorded by clearing `input_blob`.
ALTER TABLE jobs ADD COLUMN result_expired_at INTEGER;

-- The cleanup's three scans, each oldest first and each over only the rows it still
-- has work on, so a batch costs what it removes however many jobs were cleaned before.
CREATE INDEX jobs_inputs_held ON jobs (finished_at)
    WHERE input_blob IS NOT NULL AND finished_at IS NOT NULL;
CREATE INDEX jobs_results_held ON jobs (finished_at)
    WHERE state = 'completed' AND result_expired_at IS NULL AND finished_at IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
