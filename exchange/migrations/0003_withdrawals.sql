-- Withdrawals: requested by a member (funds moved from `available` to `locked`), sent to
-- coinhubd as `withdrawal.request` through the outbox, settled on `withdrawal.confirmed`
-- (locked debited: amount to the hot wallet, fee to fee revenue) or unlocked on
-- `withdrawal.failed`.

-- One row per withdrawal. `amount` is what the destination receives, `fee` the exchange's
-- withdrawal fee (both base units of `asset`); `amount + fee` is locked at request time.
CREATE TABLE withdrawals (
    id                 UUID PRIMARY KEY,
    member_id          TEXT NOT NULL CHECK (member_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    asset              TEXT NOT NULL REFERENCES assets (symbol),
    amount             NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    fee                NUMERIC(78, 0) NOT NULL CHECK (fee >= 0),
    decimals           SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 77),
    destination        TEXT NOT NULL CHECK (length(destination) BETWEEN 1 AND 128),
    status             TEXT NOT NULL DEFAULT 'requested'
                           CHECK (status IN ('requested', 'confirmed', 'failed')),
    lock_transfer_id   UUID NOT NULL UNIQUE REFERENCES transfers (id),
    settle_transfer_id UUID UNIQUE REFERENCES transfers (id),
    settle_message_id  UUID,
    -- From `withdrawal.confirmed` (informational): the paying transaction and this
    -- withdrawal's share of the network fee, in base units of `network_fee_asset`.
    txid               TEXT,
    network_fee        NUMERIC(78, 0) CHECK (network_fee >= 0),
    network_fee_asset  TEXT,
    block_height       NUMERIC(20, 0),
    -- From `withdrawal.failed`: coinhubd's reason.
    reason             TEXT,
    requested_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    settled_at         TIMESTAMPTZ,
    CONSTRAINT withdrawals_settled_iff_final CHECK (
        (status = 'requested') = (settled_at IS NULL)
        AND (status = 'requested') = (settle_transfer_id IS NULL))
);
CREATE INDEX withdrawals_member ON withdrawals (member_id, requested_at);
CREATE INDEX withdrawals_open ON withdrawals (requested_at) WHERE status = 'requested';

-- Messages the exchange publishes (today: `withdrawal.request`), written in the same
-- transaction as the state change and relayed in `seq` order with publisher confirms.
-- `id` is the message's JSON `id` and AMQP `message_id`.
CREATE TABLE outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           UUID NOT NULL UNIQUE,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- Every `withdrawal.*` message id the settlement consumer (queue
-- `coinhub-exchange.withdrawals`) has applied, in the same transaction as its effect.
CREATE TABLE withdrawal_messages (
    message_id    UUID PRIMARY KEY,
    routing_key   TEXT NOT NULL,
    withdrawal_id UUID NOT NULL REFERENCES withdrawals (id),
    outcome       TEXT NOT NULL CHECK (outcome IN (
                      'pending', 'settled', 'unlocked', 'already_settled', 'conflict_alert')),
    processed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX withdrawal_messages_withdrawal_id ON withdrawal_messages (withdrawal_id);

-- A settlement event that contradicts the withdrawal's final status (e.g. `failed` after
-- `confirmed`, or `confirmed` after the funds were unlocked). Nothing is posted; an operator
-- resolves it.
CREATE TABLE withdrawal_alerts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    UUID NOT NULL UNIQUE REFERENCES withdrawal_messages (message_id),
    withdrawal_id UUID NOT NULL REFERENCES withdrawals (id),
    status        TEXT NOT NULL,
    event         TEXT NOT NULL,
    txid          TEXT,
    reason        TEXT,
    occurred_at   TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at   TIMESTAMPTZ,
    resolution    TEXT
);
CREATE INDEX withdrawal_alerts_open ON withdrawal_alerts (created_at) WHERE resolved_at IS NULL;
