-- `coinhubd cosigner` (key B). The cosigner runs with its own database; these tables sit in
-- the shared migration set and stay empty in coinhubd's database. Amounts are integer base
-- units in NUMERIC(78,0).

-- The cosigner's own copy of every `withdrawal.request` (its own queue), idempotent on the id.
-- A request the cosigner cannot use (unknown asset, unparsable amount or destination) is kept
-- with `invalid_reason` set and is never signable.
CREATE TABLE cosigner_requests (
    request_id      UUID PRIMARY KEY,
    member_id       TEXT NOT NULL,
    -- Upper-cased symbol (as received when unknown).
    asset           TEXT NOT NULL,
    -- The configured chain of the asset; NULL when the asset is unknown.
    chain           TEXT,
    -- Canonical address text when valid (EIP-55, lowercase bech32, Base58Check); as received
    -- otherwise.
    destination     TEXT NOT NULL,
    amount_text     TEXT NOT NULL,
    -- Parsed amount; NULL when invalid.
    amount          NUMERIC(78, 0) CHECK (amount > 0),
    decimals        SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 255),
    invalid_reason  TEXT,
    occurred_at     TIMESTAMPTZ NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (invalid_reason IS NOT NULL OR (amount IS NOT NULL AND chain IS NOT NULL))
);

-- Every transaction the cosigner signed: UTXO by unsigned txid, EVM by SafeTx hash (0x hex).
CREATE TABLE cosigner_spends (
    chain        TEXT NOT NULL,
    spend_id     TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('utxo', 'evm')),
    asset        TEXT NOT NULL,
    -- Sorted ids of the requests it pays.
    request_ids  UUID[] NOT NULL,
    -- UTXO: the outpoints it spends, "txid:vout" (an RBF replacement shares one with it).
    inputs       TEXT[] NOT NULL DEFAULT '{}',
    fee          NUMERIC(78, 0) NOT NULL CHECK (fee >= 0),
    approved_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (chain, spend_id)
);

-- One row per request paid by an approved spend: the history of the policy's 24 h limit.
-- A request appears more than once only in BIP125 replacements of each other.
CREATE TABLE cosigner_approvals (
    request_id   UUID NOT NULL REFERENCES cosigner_requests (request_id),
    chain        TEXT NOT NULL,
    spend_id     TEXT NOT NULL,
    asset        TEXT NOT NULL,
    destination  TEXT NOT NULL,
    amount       NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    approved_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (request_id, chain, spend_id),
    FOREIGN KEY (chain, spend_id) REFERENCES cosigner_spends (chain, spend_id)
);
CREATE INDEX cosigner_approvals_window ON cosigner_approvals (asset, approved_at);

-- Nonces of authenticated HTTP requests (replay protection), pruned after twice the allowed
-- clock skew.
CREATE TABLE cosigner_nonces (
    nonce         UUID PRIMARY KEY,
    request_time  TIMESTAMPTZ NOT NULL,
    seen_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX cosigner_nonces_seen ON cosigner_nonces (seen_at);
