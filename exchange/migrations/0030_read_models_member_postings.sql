-- A member's orders and trades are found through posting lists, one row per member and
-- projection, instead of B-tree indexes with one entry per order and two per trade.
--
-- Why: `orders_member`, `trades_maker_member` and `trades_taker_member` (0019) took four index
-- entries a trade, each inserted at one of as many places as there are members, so each
-- descended the tree from its root. They were most of what the read models cost PostgreSQL:
-- in `psql`, 150,000 `trades` rows took 0.94-1.42 s with the two member indexes and
-- 0.48-0.63 s without. A projection now writes one row per member it touches and kind: at 200
-- members and ~8,000 trades a projection, ~400 rows instead of ~32,000 index entries. In the
-- settlement benchmark at 200 members the machine's CPU a settled trade went from ~91 to ~83
-- µs (medians of 6 alternated pairs; docs/benchmarks.md, 2026-12-07 18:50 UTC).
--
-- `orders_by_member` and `trades_by_member`: `ids` are the member's orders (trades) of one
-- market written by one projection, ascending; `last_id` is the largest. An order has one
-- member and a trade two (its maker's and its taker's, never the same member: self-trade
-- prevention cancels the resting order), and ids are unique across markets, so
-- (member_number, last_id) is unique. Readers take a member's rows by `last_id` descending
-- and merge their ids (`exchange/src/trading/store.rs`, `newest_ids`). Written only by the
-- projector (`exchange/src/trading/projection.rs`), in the transaction that writes the rows
-- and moves the watermark; append-only.
CREATE TABLE orders_by_member (
    member_number BIGINT NOT NULL,
    last_id       BIGINT NOT NULL,
    market        TEXT NOT NULL,
    ids           BIGINT[] NOT NULL,
    PRIMARY KEY (member_number, last_id)
);
CREATE TABLE trades_by_member (
    member_number BIGINT NOT NULL,
    last_id       BIGINT NOT NULL,
    market        TEXT NOT NULL,
    ids           BIGINT[] NOT NULL,
    PRIMARY KEY (member_number, last_id)
);
CREATE TRIGGER orders_by_member_append_only BEFORE UPDATE OR DELETE ON orders_by_member
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER trades_by_member_append_only BEFORE UPDATE OR DELETE ON trades_by_member
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- The rows projected so far get their postings here, in slices of 1,024 ids (any slicing
-- is valid: readers merge the rows' ids). Migrations run with the exchange stopped.
INSERT INTO orders_by_member (member_number, last_id, market, ids)
SELECT member_number, max(id), market, array_agg(id ORDER BY id)
  FROM orders
 GROUP BY member_number, market, id / 1024;
INSERT INTO trades_by_member (member_number, last_id, market, ids)
SELECT member_number, max(id), market, array_agg(id ORDER BY id)
  FROM (SELECT maker_number AS member_number, id, market FROM trades
        UNION
        SELECT taker_number, id, market FROM trades) t
 GROUP BY member_number, market, id / 1024;

DROP INDEX orders_member;
DROP INDEX trades_maker_member;
DROP INDEX trades_taker_member;
ALTER TABLE orders DROP COLUMN member_number;
ALTER TABLE trades DROP COLUMN maker_number, DROP COLUMN taker_number;
