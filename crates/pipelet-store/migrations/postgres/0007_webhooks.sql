-- Webhooks: the outbox of job events (written in the same transaction as the state
-- change each reports) and the per-API-key signing secrets.

CREATE TABLE webhook_events (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    -- A job deleted by retention takes its events with it.
    job_id             UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    owner_key_id       TEXT NOT NULL,
    url                TEXT NOT NULL,
    event_type         TEXT NOT NULL
        CHECK (event_type IN ('acquired', 'completed', 'failed', 'cancelled', 'retried')),
    snapshot           TEXT NOT NULL,
    state              TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'gave_up')),
    attempts           BIGINT NOT NULL DEFAULT 0,
    created_at_ms      BIGINT NOT NULL,
    -- NULL once delivered or given up.
    next_attempt_at_ms BIGINT,
    -- A delivery loop holds a due event until then, so no other loop takes it.
    held_until_ms      BIGINT NOT NULL DEFAULT 0,
    last_status        BIGINT,
    last_error         TEXT
);

CREATE INDEX webhook_events_job ON webhook_events (job_id, seq);
CREATE INDEX webhook_events_pending ON webhook_events (next_attempt_at_ms) WHERE state = 'pending';

CREATE TABLE webhook_secrets (
    owner_key_id      TEXT PRIMARY KEY,
    secret            TEXT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    previous_secret   TEXT,
    previous_until_ms BIGINT
);
