-- A settled batch's `exchange.events` messages are stored compactly and rendered to JSON by
-- the relay (`exchange/src/trading/events.rs`).
--
-- Why: the JSON of a trade and its two order updates is ~2 KB; writing it in the batch's
-- transaction halved what the rest of the settlement path could do (docs/benchmarks.md,
-- 2026-12-07: command log + netted ledger ~53 k trades/s, with the JSON messages row ~32 k).
-- `outcome` holds the same messages without their JSON (postcard, ~150 bytes a trade); a
-- message's id is derived from the market, the batch's first command and its place in the
-- batch, so it is the same every time the row is published.
--
-- Rows written before this migration keep their `events` text and are published from it;
-- every row has exactly one of the two.
ALTER TABLE trading_event_batches
    ADD COLUMN outcome BYTEA COMPRESSION lz4,
    ALTER COLUMN events DROP NOT NULL,
    ADD CONSTRAINT trading_event_batches_one_form CHECK ((events IS NULL) <> (outcome IS NULL));
