-- Fair sharing between keys at equal priority (start-time fair queuing): each queued job
-- carries a virtual start tag, fixed when it is queued, in thousandths of a job of the
-- owning key's share; dispatch order within a (pipeline, priority) is (vstart, seq).
-- Existing jobs get 0, which keeps their order (seq breaks the tie).
ALTER TABLE jobs ADD COLUMN vstart INTEGER NOT NULL DEFAULT 0;
-- A key's share of its priority level: 1..=100, default 1.
ALTER TABLE api_keys ADD COLUMN weight INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 100);

DROP INDEX jobs_dispatch;
CREATE INDEX jobs_dispatch ON jobs (pipeline, priority DESC, vstart, seq) WHERE state = 'queued';
-- A key's last tag in a queue, read when it queues another job.
CREATE INDEX jobs_fair_owner ON jobs (pipeline, priority, owner_key_id, vstart) WHERE state = 'queued';
