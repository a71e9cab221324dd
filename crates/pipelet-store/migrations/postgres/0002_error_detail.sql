-- A failure keeps two texts: `error` is what the client reads (plain words, no worker,
-- host or path), `error_detail` what operators need (the worker, the raw error). Only
-- admin keys see the detail.
ALTER TABLE jobs ADD COLUMN error_detail TEXT;

-- Failures recorded before the split named the lost worker in `error`: keep that text
-- as the detail and give the client the plain reason.
UPDATE jobs SET
    error_detail = error,
    error = CASE WHEN error LIKE '%server restarted%'
        THEN 'the server restarted while the job was running'
        ELSE 'the worker stopped responding' END
WHERE error LIKE '%(holder %';
