-- Usage per key, model and UTC day, kept apart from jobs so retention (which deletes
-- finished jobs) does not erase it. Each terminal transition adds to its row in the
-- same transaction. `day` is 'YYYY-MM-DD' of the job's finish time (UTC); video_ms is
-- the completed videos' length (frames / fps), run_ms the workers' render time
-- (completed jobs: a failed attempt reports no time).
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    owner_key_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    cancelled BIGINT NOT NULL DEFAULT 0,
    video_ms BIGINT NOT NULL DEFAULT 0,
    run_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, owner_key_id, model_id)
);
CREATE INDEX usage_daily_owner ON usage_daily (owner_key_id, day);

-- Jobs finished before this table existed count too (those retention kept).
INSERT INTO usage_daily (day, owner_key_id, model_id, completed, failed, cancelled, video_ms,
                         run_ms)
SELECT to_char(to_timestamp(finished_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
       owner_key_id, model_id,
       count(*) FILTER (WHERE state = 'completed'),
       count(*) FILTER (WHERE state = 'failed'),
       count(*) FILTER (WHERE state = 'cancelled'),
       COALESCE(SUM(CASE WHEN state = 'completed'
                              AND (result::jsonb ->> 'fps')::bigint > 0
                         THEN (result::jsonb ->> 'frames')::bigint * 1000
                              / (result::jsonb ->> 'fps')::bigint
                         ELSE 0 END), 0)::bigint,
       COALESCE(SUM(CASE WHEN state = 'completed'
                              AND (result::jsonb ->> 'run_seconds')::float8 > 0
                         THEN round((result::jsonb ->> 'run_seconds')::float8 * 1000)
                         ELSE 0 END), 0)::bigint
FROM jobs
WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at IS NOT NULL
GROUP BY 1, 2, 3;
