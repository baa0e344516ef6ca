-- Withdrawals (DESIGN.md, "Withdrawals"): requested → signed → broadcast → confirmed | failed.
-- Amounts are integer base units in NUMERIC(78,0).

-- One transaction that pays one or more withdrawals of one chain (UTXO: a batch; EVM: one
-- Safe execTransaction). Its attempts are the signed transactions: the original and its fee
-- replacements (BIP125 / same EVM nonce); at most one of them can be mined.
CREATE TABLE payouts (
    payout_id         BIGSERIAL PRIMARY KEY,
    chain             TEXT NOT NULL,
    asset             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('signed', 'broadcast', 'confirmed', 'failed')),
    -- EVM only: the Safe nonce of the execTransaction and the executor's account nonce.
    safe_nonce        BIGINT,
    executor_nonce    BIGINT,
    -- UTXO: the spend plan (inputs, payout vouts, change) as JSON, to bump the fee later.
    plan              JSONB,
    -- Chain height when first broadcast (where the confirmation tracker starts looking).
    broadcast_height  BIGINT,
    -- The attempt that was mined, and where.
    mined_attempt     INTEGER,
    block_height      BIGINT,
    block_hash        TEXT,
    failure_reason    TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chain, safe_nonce),
    UNIQUE (chain, executor_nonce)
);
CREATE INDEX payouts_open ON payouts (chain, payout_id) WHERE status IN ('signed', 'broadcast');

-- Signed transactions, stored before they are broadcast.
CREATE TABLE payout_attempts (
    payout_id     BIGINT NOT NULL REFERENCES payouts (payout_id),
    attempt       INTEGER NOT NULL CHECK (attempt >= 0),
    txid          TEXT NOT NULL,
    raw_tx        BYTEA NOT NULL,
    -- UTXO: the exact fee; EVM: the most the executor can pay (gas limit × max fee per gas).
    fee           NUMERIC(78, 0) NOT NULL CHECK (fee >= 0),
    -- UTXO: sat/kvB; EVM: max fee per gas in wei.
    fee_rate      NUMERIC(78, 0) NOT NULL CHECK (fee_rate >= 0),
    -- UTXO: this attempt's change output (replacements shrink it).
    change_vout   INTEGER,
    change_amount NUMERIC(78, 0),
    change_index  INTEGER,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    broadcast_at  TIMESTAMPTZ,
    PRIMARY KEY (payout_id, attempt),
    UNIQUE (txid)
);

CREATE TABLE withdrawals (
    withdrawal_id   UUID PRIMARY KEY,
    member_id       TEXT NOT NULL,
    asset           TEXT NOT NULL,
    -- NULL when the asset is unknown (the request failed at intake).
    chain           TEXT,
    destination     TEXT NOT NULL,
    -- As requested, and parsed (NULL when invalid).
    amount_text     TEXT NOT NULL,
    amount          NUMERIC(78, 0) CHECK (amount > 0),
    decimals        SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 255),
    status          TEXT NOT NULL CHECK (status IN ('requested', 'signed', 'broadcast', 'confirmed', 'failed')),
    failure_reason  TEXT,
    -- Who cancelled it (admin CLI), when it was cancelled rather than refused.
    cancelled_by    TEXT,
    payout_id       BIGINT REFERENCES payouts (payout_id),
    -- This withdrawal's share of the network fee, in the chain's native asset.
    fee             NUMERIC(78, 0),
    requested_at    TIMESTAMPTZ NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status <> 'failed' OR failure_reason IS NOT NULL),
    CHECK (status IN ('requested', 'failed') OR payout_id IS NOT NULL)
);
CREATE INDEX withdrawals_ready ON withdrawals (chain, received_at) WHERE status = 'requested';
CREATE INDEX withdrawals_by_payout ON withdrawals (payout_id);
CREATE INDEX withdrawals_by_member ON withdrawals (member_id);

-- UTXO: outputs of the wallet spent by a payout. The primary key is what guarantees that no
-- UTXO is ever given to two payouts; a failed payout's rows are deleted to free them.
CREATE TABLE payout_inputs (
    chain      TEXT NOT NULL,
    txid       TEXT NOT NULL,
    vout       INTEGER NOT NULL CHECK (vout >= 0),
    payout_id  BIGINT NOT NULL REFERENCES payouts (payout_id),
    PRIMARY KEY (chain, txid, vout)
);
CREATE INDEX payout_inputs_by_payout ON payout_inputs (payout_id);

-- UTXO: change outputs of confirmed payouts, spendable like confirmed deposits.
CREATE TABLE wallet_change (
    chain         TEXT NOT NULL,
    txid          TEXT NOT NULL,
    vout          INTEGER NOT NULL CHECK (vout >= 0),
    amount        NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    change_index  INTEGER NOT NULL CHECK (change_index >= 0),
    payout_id     BIGINT NOT NULL REFERENCES payouts (payout_id),
    PRIMARY KEY (chain, txid, vout)
);

-- Counters allocated inside database transactions, never from a node: the next UTXO change
-- index, the next Safe nonce and the next executor nonce per chain.
CREATE TABLE wallet_counters (
    chain  TEXT NOT NULL,
    name   TEXT NOT NULL CHECK (name IN ('change_index', 'safe_nonce', 'executor_nonce')),
    next   BIGINT NOT NULL CHECK (next >= 0),
    PRIMARY KEY (chain, name)
);
