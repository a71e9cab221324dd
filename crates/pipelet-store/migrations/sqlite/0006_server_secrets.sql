-- Secrets every server of a fleet shares, created once by whichever server starts
-- first (INSERT ... ON CONFLICT DO NOTHING, then SELECT): e.g. the HMAC key of the
-- signed result links (`result_links`), so any server accepts a link another made.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
