-- Idempotent creates: the first create with an `Idempotency-Key` records here, in the
-- same transaction as its job, which job it made and a hash of its model and body. A
-- repeat (same API key, same Idempotency-Key, within the window) answers with that job
-- instead of making another. No foreign key to `jobs`: retention may delete a job
-- before its key expires (a replay then finds no job and says so).
CREATE TABLE idempotency_keys (
    owner          TEXT   NOT NULL,
    key            TEXT   NOT NULL,
    request_hash   TEXT   NOT NULL,
    job_id         UUID   NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (owner, key)
);

-- For the periodic purge of expired keys.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_ms);
