-- Published messages are deleted once older than `[retention] keep_published_hours`
-- (`src/retention.rs`): withdrawal requests in `outbox`, and batch outcomes in
-- `trading_event_batches` once they are also projected into `orders` and `trades`.
--
-- The pruning rounds look rows up by their broker confirmation time. Without these indexes a
-- round with nothing old enough would read the whole table (days of batch outcomes). The
-- relay already changes an indexed column when it sets `published_at` (the partial
-- `*_unpublished` indexes), so these add one index entry per published row, no lost
-- heap-only update.
CREATE INDEX outbox_published_at ON outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX trading_event_batches_published_at ON trading_event_batches (published_at)
    WHERE published_at IS NOT NULL;
