-- coinhubd's schema. Amounts are integer base units in NUMERIC(78,0) (uint256 fits).

-- Custody keys: only ciphertext (envelope-encrypted with an OpenBao/Vault transit key)
-- and public data.
CREATE TABLE custody_keys (
    key_id            TEXT PRIMARY KEY CHECK (key_id IN ('a', 'b')),
    encrypted_seed    JSONB NOT NULL,
    evm_account_xpub  TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One deposit address per (chain, member), derived at derivation_index.
CREATE TABLE deposit_addresses (
    id                BIGSERIAL PRIMARY KEY,
    chain             TEXT NOT NULL,
    member_id         TEXT NOT NULL,
    derivation_index  INTEGER NOT NULL CHECK (derivation_index >= 0),
    address           TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (chain, member_id),
    UNIQUE (chain, derivation_index),
    UNIQUE (chain, address)
);

-- The last reorg_depth_max+1 blocks each watcher connected: its cursor and the hashes it
-- compares to find a fork point.
CREATE TABLE chain_blocks (
    chain         TEXT NOT NULL,
    height        BIGINT NOT NULL CHECK (height >= 0),
    hash          TEXT NOT NULL,
    parent_hash   TEXT NOT NULL,
    connected_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, height)
);

-- One row per transfer to a deposit address, keyed by (chain, txid, idx).
CREATE TABLE deposits (
    deposit_id    UUID PRIMARY KEY,
    chain         TEXT NOT NULL,
    txid          TEXT NOT NULL,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    asset         TEXT NOT NULL,
    member_id     TEXT NOT NULL,
    address       TEXT NOT NULL,
    amount        NUMERIC(78, 0) NOT NULL CHECK (amount >= 0),
    decimals      SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 255),
    block_height  BIGINT NOT NULL,
    block_hash    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('detected', 'confirmed', 'orphaned', 'ignored')),
    detected_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    confirmed_at  TIMESTAMPTZ,
    orphaned_at   TIMESTAMPTZ,
    UNIQUE (chain, txid, idx)
);
CREATE INDEX deposits_pending ON deposits (chain, asset, block_height) WHERE status = 'detected';
CREATE INDEX deposits_by_block ON deposits (chain, block_height);
CREATE INDEX deposits_by_member ON deposits (member_id);

-- Transactional outbox: events written with the state change they report, relayed to
-- RabbitMQ in seq order with publisher confirms.
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,
    id            UUID NOT NULL UNIQUE,
    exchange      TEXT NOT NULL,
    routing_key   TEXT NOT NULL,
    payload       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
