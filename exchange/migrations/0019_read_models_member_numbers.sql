-- The read models' member indexes key on the member's number (`trading_members.number`), an
-- 8-byte integer, instead of the member id's text.
--
-- Why: every trade writes four entries in these indexes (its two orders' `orders_member`,
-- the trade's `trades_maker_member` and `trades_taker_member`), and they were most of what a
-- read-model row costs PostgreSQL: in `psql`, 150,000 `trades` rows by binary `COPY` took
-- 0.30 s without the two member indexes, 0.84–0.94 s with them on the text member ids, and
-- 0.66–0.70 s on integer member numbers (docs/benchmarks.md, 2026-12-07). Comparing two
-- integers is a machine instruction; comparing two member ids goes through the database's
-- collation.
--
-- The member id columns stay (readers show them and compare them); the numbers sit beside
-- them, written by the projection (`exchange/src/trading/projection.rs`) from
-- `trading_members`, which maps every member who ever sent a command to its number, forever.
-- Readers look a member's rows up by number (`store.rs`: `load_orders`, `load_trades`).
--
-- Existing rows get their numbers here, which rewrites `orders` and `trades` in this
-- migration's transaction (migrations run with the exchange stopped).
ALTER TABLE orders ADD COLUMN member_number BIGINT;
UPDATE orders o SET member_number = m.number FROM trading_members m WHERE m.member_id = o.member_id;
ALTER TABLE orders ALTER COLUMN member_number SET NOT NULL;
DROP INDEX orders_member;
CREATE INDEX orders_member ON orders (member_number, id DESC);

ALTER TABLE trades ADD COLUMN maker_number BIGINT, ADD COLUMN taker_number BIGINT;
-- `trades` is append-only (trigger `trades_append_only`): the backfill is the one exception.
ALTER TABLE trades DISABLE TRIGGER trades_append_only;
UPDATE trades t SET maker_number = mk.number, taker_number = tk.number
  FROM trading_members mk, trading_members tk
 WHERE mk.member_id = t.maker_member AND tk.member_id = t.taker_member;
ALTER TABLE trades ENABLE TRIGGER trades_append_only;
ALTER TABLE trades ALTER COLUMN maker_number SET NOT NULL,
                   ALTER COLUMN taker_number SET NOT NULL;
DROP INDEX trades_maker_member;
DROP INDEX trades_taker_member;
CREATE INDEX trades_maker_member ON trades (maker_number, id DESC);
CREATE INDEX trades_taker_member ON trades (taker_number, id DESC);
