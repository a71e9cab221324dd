-- Key management: a shown prefix of each secret, expiry, last use (written at most about
-- once a minute per key), and a per-key version bumped by every revoke, rotate or update,
-- whose sum is the "key generation" servers poll to drop cached keys within a second.
ALTER TABLE api_keys ADD COLUMN secret_prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- Live names become unique (management addresses a key by name): a live key that shares
-- its name with an older live key gets its id's first characters appended.
UPDATE api_keys SET name = name || ' (' || substr(id, 1, 8) || ')'
WHERE revoked_at IS NULL AND EXISTS (
    SELECT 1 FROM api_keys o
    WHERE o.name = api_keys.name AND o.revoked_at IS NULL
      AND (o.created_at < api_keys.created_at
           OR (o.created_at = api_keys.created_at AND o.id < api_keys.id))
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
