-- pipelet's embedded schema. Times are Unix milliseconds.

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('client', 'worker', 'admin')),
    secret_sha256 TEXT NOT NULL UNIQUE,
    max_priority  INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    model_id         TEXT NOT NULL,
    pipeline         TEXT NOT NULL,
    owner_key_id     TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    spec             TEXT NOT NULL,
    input_blob       TEXT,
    created_at       INTEGER NOT NULL,
    enqueued_at      INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    heartbeat_at     INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_done    INTEGER,
    progress_total   INTEGER,
    error            TEXT,
    result           TEXT,
    cancelled_by     TEXT,
    webhook_url      TEXT
);

-- Dispatch order per pipeline; partial so finished jobs cost nothing.
CREATE INDEX jobs_dispatch ON jobs (pipeline, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_owner ON jobs (owner_key_id, seq DESC);
