-- The ledger's trigger functions run with JIT compilation off.
--
-- Why: since 0022 they carry `enable_seqscan = off` (and no hash or merge joins), so their
-- statements look rows up by key whatever the tables' statistics. A statement that has to
-- scan a table without a usable index still runs, but the planner prices the disabled scan at
-- 10^10, far above `jit_above_cost` (100,000), and PostgreSQL then compiles the statement
-- with LLVM each time it runs: 45 ms for a 400-row scan in `psql` here, against 0.1 ms
-- without. No statement of these functions scans today (`pg_stat_statements` counted no JIT
-- function in the settlement benchmark); this keeps a future one without an index slow by
-- its scan only. Their statements are small (one trigger's rows, one transfer's accounts):
-- JIT never pays off on them.
ALTER FUNCTION ledger_apply_deltas(BIGINT[], NUMERIC[]) SET jit = off;
ALTER FUNCTION ledger_apply_entries() SET jit = off;
ALTER FUNCTION ledger_apply_unapplied() SET jit = off;
ALTER FUNCTION ledger_check_transfer() SET jit = off;
ALTER FUNCTION ledger_run_pending_check() SET jit = off;
ALTER FUNCTION ledger_check_applied() SET jit = off;
