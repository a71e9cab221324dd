-- Per-key quotas: NULL takes the server's default (--max-queued-per-key,
-- --max-running-per-key, --creates-per-minute); 0 is "no limit" for this key.
ALTER TABLE api_keys ADD COLUMN max_queued INTEGER;
ALTER TABLE api_keys ADD COLUMN max_running INTEGER;
ALTER TABLE api_keys ADD COLUMN creates_per_minute INTEGER;

-- Counting one key's queued or running jobs (its quotas) reads only that key's rows.
CREATE INDEX jobs_owner_active ON jobs (owner_key_id, state) WHERE state IN ('queued', 'running');
