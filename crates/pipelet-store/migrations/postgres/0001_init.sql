-- pipelet's shared schema: the same logical tables as the SQLite store. Times are Unix
-- milliseconds (BIGINT) so both stores hold identical values. `spec` and `result` are
-- JSON kept as text: exactly what the caller wrote comes back (jsonb would refuse a
-- "\u0000" escape that serde_json writes for a NUL in a prompt).

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('client', 'worker', 'admin')),
    secret_sha256 TEXT NOT NULL UNIQUE,
    max_priority  BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE jobs (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID NOT NULL UNIQUE,
    model_id         TEXT NOT NULL,
    pipeline         TEXT NOT NULL,
    owner_key_id     TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    spec             TEXT NOT NULL,
    input_blob       TEXT,
    created_at       BIGINT NOT NULL,
    enqueued_at      BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    attempt          BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    lease_token      BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    heartbeat_at     BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    progress_done    BIGINT,
    progress_total   BIGINT,
    error            TEXT,
    result           TEXT,
    cancelled_by     TEXT,
    webhook_url      TEXT
);

-- Dispatch order per pipeline; partial so finished jobs cost nothing. Claims read its
-- head; a queue position is two index-only range counts on it (see src/postgres/mod.rs).
CREATE INDEX jobs_dispatch ON jobs (pipeline, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_owner ON jobs (owner_key_id, seq DESC);

-- A queue table churns: vacuum it early so the visibility map stays set and the
-- position counts stay index-only (no heap visits).
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.05
);
