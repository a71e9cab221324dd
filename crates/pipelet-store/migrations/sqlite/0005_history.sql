-- Request history (`GET /requests`): newest first by creation time, then insertion
-- order, per key and across keys (admin), paged by keyset on (created_at, seq).
CREATE INDEX jobs_history_owner ON jobs (owner_key_id, created_at DESC, seq DESC);
CREATE INDEX jobs_history ON jobs (created_at DESC, seq DESC);
-- `?key_name=` resolves a name to its keys' ids.
CREATE INDEX api_keys_name ON api_keys (name);
