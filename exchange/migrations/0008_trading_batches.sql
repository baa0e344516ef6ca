-- One row per settled batch for the command log and for the batch's `exchange.events`
-- messages, instead of one row per command and one outbox row per message.
--
-- Why: a settled batch of ~2,500 trades wrote ~5,000 command rows and ~7,500 `outbox` rows
-- (JSONB, parsed and indexed one by one); the outbox alone was ~80 % of the batch's write
-- time (docs/benchmarks.md). A batch's commands and messages are always written, read and
-- published together, in order, so one row each loses nothing: the command log is still
-- gap-free per market (checked on replay), and every message keeps its own id, routing key
-- and body.

-- The command log: commands `first_seq ..= last_seq` of `market`, one JSON command per line
-- (`\n`-separated, in seq order; JSON text never contains a raw newline). Append-only.
CREATE TABLE trading_command_batches (
    market     TEXT NOT NULL,
    first_seq  BIGINT NOT NULL CHECK (first_seq > 0),
    last_seq   BIGINT NOT NULL CHECK (last_seq >= first_seq),
    commands   TEXT COMPRESSION lz4 NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (market, first_seq),
    CONSTRAINT trading_command_batches_last_unique UNIQUE (market, last_seq)
);

INSERT INTO trading_command_batches (market, first_seq, last_seq, commands, created_at)
SELECT market, seq, seq, command::text, created_at FROM trading_commands;
DROP TABLE trading_commands;

CREATE TRIGGER trading_command_batches_append_only
    BEFORE UPDATE OR DELETE ON trading_command_batches
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- The `exchange.events` messages of one settled batch, published by the relay in `id` order
-- (`published` counts the messages the broker has confirmed so far, so a relay that stops
-- half-way resumes after them). `events`: one message per line, `routing key TAB message id
-- TAB JSON body`.
CREATE TABLE trading_event_batches (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    market       TEXT NOT NULL,
    first_seq    BIGINT NOT NULL CHECK (first_seq > 0),
    last_seq     BIGINT NOT NULL CHECK (last_seq >= first_seq),
    event_count  INTEGER NOT NULL CHECK (event_count > 0),
    events       TEXT COMPRESSION lz4 NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published    INTEGER NOT NULL DEFAULT 0 CHECK (published BETWEEN 0 AND event_count),
    published_at TIMESTAMPTZ,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    CONSTRAINT trading_event_batches_done CHECK (published_at IS NULL OR published = event_count)
);
CREATE INDEX trading_event_batches_unpublished ON trading_event_batches (id)
    WHERE published_at IS NULL;

-- Messages of batches settled before this migration, still waiting in `outbox`, are published
-- from there as before.

-- Order updates without index maintenance. A filled maker's row is updated in the batch after
-- the one that inserted it; with `orders_open` (a partial index on `status`) every such update
-- inserted new entries in all three indexes (~27 µs a row in the settlement benchmark). Open
-- orders are now read from the books (each market's task answers them; at start the resting
-- orders of the replayed book are loaded by id), so no index mentions a column an update
-- changes, and the free space left in each page lets PostgreSQL keep the new version on the
-- same page (a heap-only tuple update). Half of each page is kept free: most orders rest and
-- are updated at least once (filled, cancelled); at 80 % about half the updates of a batch
-- still found no room on their page (measured).
DROP INDEX orders_open;
ALTER TABLE orders SET (fillfactor = 50);

-- A trade is written once: its command is in the command log, whose key (market, first_seq)
-- is unique and which is written in the same transaction as the trade, so a command and its
-- trades are never settled twice. The extra unique index cost one more index entry per trade.
ALTER TABLE trades DROP CONSTRAINT trades_command_unique;

-- Book snapshots: a market's resting orders in priority order after command `seq` (JSON
-- `coinhub_matcher::BookSnapshot`). A restart restores the newest one and replays only the
-- commands after it. An optimisation only: the command log stays complete.
CREATE TABLE trading_book_snapshots (
    market     TEXT NOT NULL,
    seq        BIGINT NOT NULL CHECK (seq > 0),
    orders     BIGINT NOT NULL CHECK (orders >= 0),
    book       TEXT COMPRESSION lz4 NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (market, seq)
);
