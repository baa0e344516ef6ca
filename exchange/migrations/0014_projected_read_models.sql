-- `orders` and `trades` become read models, projected from each settled batch's stored
-- outcome (its `trading_event_batches` row) after the batch commits, instead of being written
-- in the batch's transaction (`exchange/src/trading/projection.rs`).
--
-- Why: a batch's order and trade rows were most of its cost. The command log and the netted
-- ledger transfer alone settle ~40-55 k trades/s on the reference machine; with the rows in
-- the same transaction ~15 k (docs/benchmarks.md, 2026-12-07). The batch's outcome row holds
-- everything the rows are made of, so the settlement stays exactly as durable: a crash
-- after a commit loses no order or trade, the projection of the committed rows is finished
-- at the next start.
--
-- `trading_projection` is each market's watermark: every batch whose commands end at or
-- before `projected_seq` is in `orders` and `trades`. A projector locks the market's row, so
-- a market's batches are projected one at a time, in command order.
CREATE TABLE trading_projection (
    market        TEXT PRIMARY KEY,
    projected_seq BIGINT NOT NULL CHECK (projected_seq >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Everything settled so far wrote its rows in its own transaction: it is projected.
INSERT INTO trading_projection (market, projected_seq)
SELECT name, coalesce((SELECT max(last_seq) FROM trading_command_batches b
                        WHERE b.market = m.name), 0)
  FROM trading_markets m;

-- Form of `outcome`: 1 = the messages only (0013); 2 = also what the read models need (an
-- order's placing command, a trade's ordinal, the batch's ledger transfer). A batch's row is
-- now written even when no events are published (`published_at` set at once): it is the
-- projection's source.
ALTER TABLE trading_event_batches
    ADD COLUMN form SMALLINT NOT NULL DEFAULT 1 CHECK (form IN (1, 2));

-- The projector reads a market's rows after its watermark, in command order.
CREATE INDEX trading_event_batches_by_market ON trading_event_batches (market, first_seq);
