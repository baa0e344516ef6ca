-- The relay takes a market's `exchange.events` batches in command order (`first_seq`), not in
-- `id` order: a batch's row is now inserted before the batch ahead of it has committed (the
-- insert no longer waits in the part of a batch that runs one batch at a time), so ids can
-- come out of command order. This index answers "does an earlier batch of this market still
-- wait?" for the relay.
CREATE INDEX trading_event_batches_unpublished_by_market
    ON trading_event_batches (market, first_seq) WHERE published_at IS NULL;
