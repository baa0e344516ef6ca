-- Trading: markets, the per-market command log the books are rebuilt from, orders, trades.
-- Amounts are integers in base units (NUMERIC(78,0)); prices are quote base units per lot.
-- The engine bulk-writes these tables (COPY) in the transaction that posts the ledger
-- transfer; they carry no foreign keys, whose per-row checks would cost more than the rows.
-- The ledger side of trading is one netted `trade_settlement` transfer per settled batch
-- (see exchange/src/trading/mod.rs), written in the same transaction as these rows.

-- The parameters a market's command log was written with. The engine refuses to start when
-- the configuration changes tick or lot size (or the assets) of a market with history.
CREATE TABLE trading_markets (
    name       TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,32}$'),
    base       TEXT NOT NULL,
    quote      TEXT NOT NULL,
    tick_size  NUMERIC(78, 0) NOT NULL CHECK (tick_size > 0),
    lot_size   NUMERIC(78, 0) NOT NULL CHECK (lot_size > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The matcher identifies members by number; this maps them to ledger member ids, forever.
CREATE TABLE trading_members (
    member_id TEXT PRIMARY KEY CHECK (member_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    number    BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- Every command the matcher ran, per market, in order (`seq` 1, 2, ... without gaps).
-- Replaying them into an empty book rebuilds the book exactly. Append-only.
CREATE TABLE trading_commands (
    market     TEXT NOT NULL,
    seq        BIGINT NOT NULL CHECK (seq > 0),
    command    JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (market, seq)
);

-- Orders and their latest state. `hold` is what is still locked for the order, in
-- `hold_asset` (quote for buys, base for sells); it is zero once the order is final.
CREATE TABLE orders (
    id              BIGINT PRIMARY KEY CHECK (id > 0),
    market          TEXT NOT NULL,
    member_id       TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    kind            TEXT NOT NULL CHECK (kind IN ('limit', 'market')),
    price           NUMERIC(78, 0) CHECK (price > 0),
    quantity        NUMERIC(78, 0) CHECK (quantity > 0),
    quote_amount    NUMERIC(78, 0) CHECK (quote_amount > 0),
    time_in_force   TEXT CHECK (time_in_force IN ('gtc', 'ioc', 'fok', 'post_only')),
    client_order_id TEXT CHECK (length(client_order_id) BETWEEN 1 AND 64),
    filled          NUMERIC(78, 0) NOT NULL CHECK (filled >= 0),
    filled_quote    NUMERIC(78, 0) NOT NULL CHECK (filled_quote >= 0),
    hold            NUMERIC(78, 0) NOT NULL CHECK (hold >= 0),
    hold_asset      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'filled', 'cancelled', 'rejected')),
    reason          TEXT,
    seq             BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT orders_final_hold_zero CHECK (status = 'open' OR hold = 0)
);
CREATE INDEX orders_member ON orders (member_id, id DESC);
CREATE INDEX orders_open ON orders (market) WHERE status = 'open';

-- Settled trades. (market, seq, ordinal) names the command and the trade's place in its
-- output, so a trade can never be written twice.
CREATE TABLE trades (
    id             BIGINT PRIMARY KEY CHECK (id > 0),
    market         TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    ordinal        INTEGER NOT NULL,
    price          NUMERIC(78, 0) NOT NULL CHECK (price > 0),
    quantity       NUMERIC(78, 0) NOT NULL CHECK (quantity > 0),
    quote_quantity NUMERIC(78, 0) NOT NULL CHECK (quote_quantity > 0),
    maker_order_id BIGINT NOT NULL,
    taker_order_id BIGINT NOT NULL,
    maker_member   TEXT NOT NULL,
    taker_member   TEXT NOT NULL,
    taker_side     TEXT NOT NULL CHECK (taker_side IN ('buy', 'sell')),
    maker_fee      NUMERIC(78, 0) NOT NULL CHECK (maker_fee >= 0),
    taker_fee      NUMERIC(78, 0) NOT NULL CHECK (taker_fee >= 0),
    fee_asset      TEXT NOT NULL,
    transfer_id    UUID,  -- the batch's `trade_settlement` transfer; NULL if it netted to zero
    created_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT trades_command_unique UNIQUE (market, seq, ordinal)
);
CREATE INDEX trades_maker_member ON trades (maker_member, id DESC);
CREATE INDEX trades_taker_member ON trades (taker_member, id DESC);

CREATE TRIGGER trading_commands_append_only BEFORE UPDATE OR DELETE ON trading_commands
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER trades_append_only BEFORE UPDATE OR DELETE ON trades
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
