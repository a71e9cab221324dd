-- Usage per key, model and UTC day, kept apart from jobs so retention (which deletes
-- finished jobs) does not erase it. Each terminal transition adds to its row in the
-- same transaction. `day` is 'YYYY-MM-DD' of the job's finish time (UTC); video_ms is
-- the completed videos' length (frames / fps), run_ms the workers' render time
-- (completed jobs: a failed attempt reports no time).
CREATE TABLE usage_daily (
    day TEXT NOT NULL,
    owner_key_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    video_ms INTEGER NOT NULL DEFAULT 0,
    run_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, owner_key_id, model_id)
);
CREATE INDEX usage_daily_owner ON usage_daily (owner_key_id, day);

-- Jobs finished before this table existed count too (those retention kept).
INSERT INTO usage_daily (day, owner_key_id, model_id, completed, failed, cancelled, video_ms,
                         run_ms)
SELECT strftime('%Y-%m-%d', finished_at / 1000, 'unixepoch'), owner_key_id, model_id,
       SUM(state = 'completed'), SUM(state = 'failed'), SUM(state = 'cancelled'),
       SUM(CASE WHEN state = 'completed' AND json_valid(result)
                     AND CAST(json_extract(result, '$.fps') AS INTEGER) > 0
                THEN CAST(json_extract(result, '$.frames') AS INTEGER) * 1000
                     / CAST(json_extract(result, '$.fps') AS INTEGER)
                ELSE 0 END),
       SUM(CASE WHEN state = 'completed' AND json_valid(result)
                     AND json_extract(result, '$.run_seconds') > 0
                THEN CAST(ROUND(json_extract(result, '$.run_seconds') * 1000) AS INTEGER)
                ELSE 0 END)
FROM jobs
WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at IS NOT NULL
GROUP BY 1, 2, 3;
