-- A transfer's deferred balance check is queued once per INSERT statement of its entries
-- instead of once per entry.
--
-- Why: 0006's deferred `entries_balanced` row trigger fired for every entry at commit; all but
-- the transfer's last entry only probed for a later one (7–12 ms for a 500-entry trade
-- settlement, docs/benchmarks.md). Now a statement trigger (`entries_queue_check`) queues one
-- check per transfer the statement wrote to, as a row in `ledger_pending_checks`, whose
-- deferred constraint trigger checks the transfer and deletes the row.
--
-- The guarantees are those of 0006: at commit (or at `SET CONSTRAINTS … IMMEDIATE`) every
-- transfer has at least two entries and they sum to zero per asset. Every statement that adds
-- entries queues a check that runs after it (so an entry added after an immediate check is
-- checked again), a check queued in a subtransaction that is rolled back goes with the
-- subtransaction's entries, and the transfer row's own `transfers_balanced` check still runs
-- once per transfer (a transfer without any entry).

CREATE TABLE ledger_pending_checks (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id UUID NOT NULL
);

CREATE FUNCTION ledger_run_pending_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_assert_balanced(NEW.transfer_id);
    DELETE FROM ledger_pending_checks WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_queue_checks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pending_checks (transfer_id)
    SELECT DISTINCT transfer_id FROM new_entries;
    RETURN NULL;
END $$;

-- Named `entries_balanced` like the row trigger it replaces, so `SET CONSTRAINTS
-- transfers_balanced, entries_balanced IMMEDIATE` (the journal's and the trading engine's
-- check before they return) still runs the queued checks.
DROP TRIGGER entries_balanced ON entries;
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON ledger_pending_checks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_run_pending_check();

CREATE TRIGGER entries_queue_check AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_queue_checks();
