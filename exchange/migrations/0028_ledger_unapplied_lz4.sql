-- `ledger_unapplied`'s per-account deltas (0025) are compressed with LZ4 instead of the
-- default pglz.
--
-- Why: a trade settlement's row holds one account id and one amount per account its batch
-- changed (400–500 at 200 members in the settlement benchmark, ~7 KB), more than a row keeps
-- uncompressed (2 KB), so PostgreSQL compresses both arrays when the row is written and
-- decompresses them when it is deleted (applied), in the same transaction. pglz was ~1 % of
-- the machine's CPU in the settlement benchmark (`perf`); LZ4 compresses several times
-- faster. The other large values of a batch (commands, outcome) have used LZ4 since 0008
-- and 0013.
ALTER TABLE ledger_unapplied
    ALTER COLUMN account_ids SET COMPRESSION lz4,
    ALTER COLUMN amounts SET COMPRESSION lz4;
