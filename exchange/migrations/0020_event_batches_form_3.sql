-- Stored form 3 of a settled batch's outcome (`trading/outcome.rs`): amounts as integers of
-- base units, times as microseconds, the market's assets once per batch.
--
-- Why: forms 1 and 2 held every order as the API shows it, amounts and times as text. The
-- engine formatted ~10 strings an order to store a batch, and the projector parsed them back
-- to write `orders` (both on the machine's two cores, next to PostgreSQL). Rows of forms 1
-- and 2 stay readable; only form 3 is written from now on.
ALTER TABLE trading_event_batches DROP CONSTRAINT trading_event_batches_form_check;
ALTER TABLE trading_event_batches
    ADD CONSTRAINT trading_event_batches_form_check CHECK (form IN (1, 2, 3));
