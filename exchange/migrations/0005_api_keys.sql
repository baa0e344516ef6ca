-- Per-member API keys of the HTTP API (`exchange/src/api/`) and the nonces they have used.

-- One row per key. `secret` is the HMAC-SHA256 key the member signs with, lowercase hex of
-- 32 random bytes. It is stored as issued, not hashed: verifying an HMAC needs the key
-- itself (a hash of it cannot check a signature). Whoever can read this table can therefore
-- sign as any member; keep database access as narrow as the ledger's own, and never select
-- this column into logs. Encrypting it under a key held outside the database (OpenBao
-- transit) is the next step if the threat model needs it.
-- A revoked key stays (its id is never reused) with `revoked_at` set; requests signed with
-- it are refused like those of an unknown key.
CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY CHECK (key_id ~ '^ck_[0-9a-f]{32}$'),
    member_id  TEXT NOT NULL CHECK (member_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    secret     TEXT NOT NULL CHECK (secret ~ '^[0-9a-f]{64}$'),
    label      TEXT CHECK (length(label) BETWEEN 1 AND 100),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_member ON api_keys (member_id);

-- Every nonce a key has signed with, recorded once its signature and timestamp verified and
-- before the request runs; a second request with the same (key, nonce) is a replay. Rows
-- older than twice the allowed clock skew are pruned: a replay of them fails the timestamp
-- check anyway.
CREATE TABLE api_nonces (
    key_id       TEXT NOT NULL REFERENCES api_keys (key_id),
    nonce        TEXT NOT NULL CHECK (nonce ~ '^[A-Za-z0-9_-]{16,64}$'),
    request_time TIMESTAMPTZ NOT NULL,
    seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX api_nonces_seen ON api_nonces (seen_at);
