-- The read models `orders` and `trades` lose their CHECK constraints; columns, NOT NULLs,
-- keys, indexes and `trades_append_only` stay.
--
-- Why: since 0014 nothing writes these tables but the projector (`projection.rs`), from the
-- settled batches' stored outcomes, and every value it writes comes from a type that cannot
-- hold what the checks refused: amounts are unsigned integers of base units (never below
-- zero), a price or quantity of a trade is a whole number of ticks or lots of at least one,
-- side, kind, time in force and status are Rust enums written by name, a client order id
-- was checked (1–64 characters) before its command was logged, and a final order's hold is
-- zero because the engine unlocked it in the same batch (the ledger, which keeps all its
-- constraints, would have refused the batch otherwise). Input from members never reaches
-- these tables unchecked: the API and the engine refuse it first (`check_order`).
--
-- Evaluating the 13 checks of an order row and 7 of a trade row was ~30 % of a row's
-- `COPY` without its indexes: 300,000 order rows in `psql`, six alternated rounds, 620–910 ms
-- without the checks against 720–1,230 ms with them, about 1 µs a row (three rows a trade
-- in the settlement benchmark). See docs/benchmarks.md, "Exchange settlement".
ALTER TABLE orders
    DROP CONSTRAINT orders_id_check,
    DROP CONSTRAINT orders_side_check,
    DROP CONSTRAINT orders_kind_check,
    DROP CONSTRAINT orders_price_check,
    DROP CONSTRAINT orders_quantity_check,
    DROP CONSTRAINT orders_quote_amount_check,
    DROP CONSTRAINT orders_time_in_force_check,
    DROP CONSTRAINT orders_client_order_id_check,
    DROP CONSTRAINT orders_filled_check,
    DROP CONSTRAINT orders_filled_quote_check,
    DROP CONSTRAINT orders_hold_check,
    DROP CONSTRAINT orders_status_check,
    DROP CONSTRAINT orders_final_hold_zero;

ALTER TABLE trades
    DROP CONSTRAINT trades_id_check,
    DROP CONSTRAINT trades_price_check,
    DROP CONSTRAINT trades_quantity_check,
    DROP CONSTRAINT trades_quote_quantity_check,
    DROP CONSTRAINT trades_taker_side_check,
    DROP CONSTRAINT trades_maker_fee_check,
    DROP CONSTRAINT trades_taker_fee_check;
