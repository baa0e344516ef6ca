-- Leaves three quarters of each `accounts` page free, so that a balance update can put the
-- row's new version on the same page: a heap-only (HOT) update, which adds no index entry.
--
-- Why: a trade settlement batch updates the balances of hundreds of accounts, and the busiest
-- accounts are updated by every batch. An old version can only be pruned once no running
-- transaction may still see it, and the read models' projector (`projection.rs`) holds a
-- transaction open for up to 16 batches (~150 ms on the test machine), so each busy account
-- keeps ~10 versions. With full pages most updates found no room on their page: in the
-- settlement bench (200 members) 45 % of the `accounts` updates were heap-only, the table
-- grew to ~6 MB for ~800 rows, and every other update added entries to both of its indexes,
-- which later lookups of that account had to step over. With a fill factor of 25: 94–98 %
-- heap-only, and 31–32 k → 33–35 k settled trades/s (docs/benchmarks.md, 2026-12-07).
--
-- The cost is space: a page holds about a quarter of the accounts it did (~130 bytes a row,
-- so ~0.5 KB per account). The setting applies to pages written from now on; `CLUSTER`
-- rewrites the existing ones with it, in this migration's transaction, holding `accounts`
-- exclusively while it runs (migrations run with the exchange stopped).
ALTER TABLE accounts SET (fillfactor = 25);
CLUSTER accounts USING accounts_pkey;
