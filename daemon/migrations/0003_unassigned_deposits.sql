-- Payments to a watched look-ahead address that no member has been given yet (e.g. the
-- database was restored from a backup older than the address). Kept for an operator; never
-- credited automatically.
CREATE TABLE unassigned_deposits (
    chain          TEXT NOT NULL,
    txid           TEXT NOT NULL,
    idx            INTEGER NOT NULL CHECK (idx >= 0),
    script_pubkey  BYTEA NOT NULL,
    asset          TEXT NOT NULL,
    amount         NUMERIC(78, 0) NOT NULL CHECK (amount >= 0),
    block_height   BIGINT NOT NULL,
    block_hash     TEXT NOT NULL,
    detected_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, txid, idx)
);
