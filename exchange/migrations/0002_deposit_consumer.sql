-- What the deposit consumer (queue `coinhub-exchange.deposits`) has applied.

-- Every AMQP message id (the JSON `id`) the consumer has applied, written in the same
-- transaction as its effect: a redelivery finds its id here and changes nothing.
CREATE TABLE processed_messages (
    message_id   UUID PRIMARY KEY,
    routing_key  TEXT NOT NULL,
    deposit_id   UUID NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN (
                     'pending', 'credited', 'deposit_already_credited', 'zero_amount',
                     'superseded_by_orphan', 'orphan_recorded', 'reversal_alert')),
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX processed_messages_deposit_id ON processed_messages (deposit_id);

-- One row per credited deposit (at most one credit per deposit id), with what the chain said.
CREATE TABLE deposit_credits (
    deposit_id    UUID PRIMARY KEY,
    transfer_id   UUID NOT NULL UNIQUE REFERENCES transfers (id),
    message_id    UUID NOT NULL REFERENCES processed_messages (message_id),
    member_id     TEXT NOT NULL,
    asset         TEXT NOT NULL REFERENCES assets (symbol),
    amount        NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    chain         TEXT NOT NULL,
    txid          TEXT NOT NULL,
    output_index  BIGINT NOT NULL,
    block_height  NUMERIC(20, 0) NOT NULL,
    block_hash    TEXT NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL,
    credited_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every `deposit.orphaned` event, credited or not. A confirmation that is older than an
-- orphan of the same deposit is stale and credits nothing.
CREATE TABLE deposit_orphans (
    message_id    UUID PRIMARY KEY REFERENCES processed_messages (message_id),
    deposit_id    UUID NOT NULL,
    was_confirmed BOOLEAN NOT NULL,
    was_credited  BOOLEAN NOT NULL,
    block_hash    TEXT NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX deposit_orphans_deposit_id ON deposit_orphans (deposit_id, occurred_at);

-- A credited deposit whose block left the best chain: the member was credited for coins we
-- may not hold. Nothing is debited automatically; an operator resolves it.
CREATE TABLE credit_reversal_alerts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    UUID NOT NULL UNIQUE REFERENCES processed_messages (message_id),
    deposit_id    UUID NOT NULL REFERENCES deposit_credits (deposit_id),
    transfer_id   UUID NOT NULL REFERENCES transfers (id),
    member_id     TEXT NOT NULL,
    asset         TEXT NOT NULL,
    amount        NUMERIC(78, 0) NOT NULL,
    was_confirmed BOOLEAN NOT NULL,
    block_hash    TEXT NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at   TIMESTAMPTZ,
    resolution    TEXT
);
CREATE INDEX credit_reversal_alerts_open ON credit_reversal_alerts (created_at)
    WHERE resolved_at IS NULL;
