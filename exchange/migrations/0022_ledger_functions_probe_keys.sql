-- The ledger's trigger functions look rows up by key whatever the tables' statistics say.
--
-- Why: PL/pgSQL plans each statement of a function once per database session and keeps the
-- plan. A session that first ran a function while its tables were small (a new database, the
-- first deposits) keeps plans made for small tables: a sequential scan of `entries` to prove
-- a transfer has an entry, or a hash join that reads all of `accounts` to change a few
-- hundred balances. They stay until the tables' statistics change (autovacuum's next
-- ANALYZE), however much the tables grow meanwhile. In the settlement benchmark (a fresh
-- database, ~20 s) such plans took 3–9 ms a batch each, where the key lookups take well under
-- one (docs/benchmarks.md, 2026-12-07 14:35 UTC). Every statement of these functions finds
-- its rows by a key (an account id, a transfer id) that an index serves, so they are planned
-- with sequential scans, hash joins and merge joins off (a scan of a transition table or of
-- `unnest` is unaffected).
--
-- A later `CREATE OR REPLACE FUNCTION` of one of these drops its settings: repeat them there.
ALTER FUNCTION ledger_apply_deltas(BIGINT[], NUMERIC[])
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION ledger_apply_entries()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION ledger_apply_unapplied()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION ledger_check_transfer()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION ledger_run_pending_check()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION ledger_check_applied()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;

-- Applying a settlement deletes its `ledger_unapplied` row by transfer id (in the part of a
-- batch's write that runs one batch at a time). The table's rows live for one transaction,
-- but their dead versions stay until autovacuum comes by: without an index each apply read
-- all of them.
CREATE INDEX ledger_unapplied_transfer_id ON ledger_unapplied (transfer_id);
