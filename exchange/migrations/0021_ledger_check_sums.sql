-- A transfer's deferred balance check adds up sums its entries' statements recorded, instead
-- of reading the transfer's entries and their accounts back; and the transfer row's own check
-- only proves that the transfer has entries.
--
-- Why: a trade settlement's transfer has one entry per account a batch changed (~400 at 200
-- members). Its balance was checked twice at `SET CONSTRAINTS … IMMEDIATE`, by the transfer
-- row's `transfers_balanced` and by the entries' `entries_balanced`, each counting the
-- entries and summing them per asset through a join to `accounts` (~1.5 ms a batch in the
-- settlement benchmark, docs/benchmarks.md). The entries' statement trigger (0009, 0016)
-- already joins the statement's entries to their accounts, to prove they exist.
--
-- How:
-- * `ledger_pending_checks` rows carry, per transfer and asset, the sum of one statement's
--   entries and how many there were. The entries' statement trigger (`entries_apply`) writes
--   them, from its transition table joined to `accounts`; an entry whose account does not
--   exist is refused there, in both ways of applying (it was a separate probe in the
--   deferred way). `entries_queue_check` (0010), which queued one bare row per transfer, is
--   dropped.
-- * The deferred `entries_balanced` check (one per `ledger_pending_checks` row) takes every
--   pending row of its transfer: fewer than two entries (counting those checked before), or
--   an asset whose sum is not zero, refuses the transaction as before; otherwise it deletes
--   them, and the checks of the transfer's other rows find nothing left to do.
-- * `transfers_balanced` proves the transfer has an entry; the statements that wrote them
--   queued the full check.
--
-- The guarantees are those of 0006 and 0010: at commit (or at `SET CONSTRAINTS … IMMEDIATE`)
-- every transfer has at least two entries and they sum to zero per asset. Why it still holds:
-- a statement trigger sees every row of its statement, so the recorded sums cover every
-- entry; entries are append-only and an account's asset never changes (`accounts_guard`), so
-- a sum recorded at insert is the sum at commit; a check deletes only sums it found to be
-- zero, so the entries checked before plus the pending ones always balance iff the pending
-- ones do; an entry written after a check records a new sum. The pending rows are written
-- only by the entries' trigger and deleted only by the check (`ledger_pending_checks_guard`):
-- deleting one by hand cannot skip a check.

-- Empty after every commit; rows left by a transaction that could not clean up are of
-- transfers committed long ago.
DELETE FROM ledger_pending_checks;
ALTER TABLE ledger_pending_checks
    ADD COLUMN asset   TEXT NOT NULL,
    ADD COLUMN amount  NUMERIC NOT NULL,
    ADD COLUMN entries BIGINT NOT NULL CHECK (entries > 0);
CREATE INDEX ledger_pending_checks_transfer_id ON ledger_pending_checks (transfer_id);

DROP TRIGGER entries_queue_check ON entries;
DROP FUNCTION ledger_queue_checks();

-- Rows come only from the entries' trigger and go only by the check (both at depth 2), and
-- are never changed.
CREATE FUNCTION ledger_pending_checks_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'DELETE') AND pg_trigger_depth() >= 2 THEN
        RETURN CASE TG_OP WHEN 'INSERT' THEN NEW ELSE OLD END;
    END IF;
    RAISE EXCEPTION 'ledger_pending_checks rows are written by the entries trigger and removed by the balance check only (%)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation',
              CONSTRAINT = 'ledger_pending_checks_guard';
END $$;

CREATE TRIGGER ledger_pending_checks_guard BEFORE INSERT OR UPDATE OR DELETE
    ON ledger_pending_checks
    FOR EACH ROW EXECUTE FUNCTION ledger_pending_checks_guard();
CREATE TRIGGER ledger_pending_checks_no_truncate BEFORE TRUNCATE ON ledger_pending_checks
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_pending_checks_guard();

-- 0016's statement trigger, with the statement's sums recorded (and its accounts proven to
-- exist) in one pass.
CREATE OR REPLACE FUNCTION ledger_apply_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    transfer UUID;
    first_id BIGINT;
    missing BIGINT;
    ids BIGINT[];
    amounts NUMERIC[];
BEGIN
    SELECT n.transfer_id INTO transfer
      FROM (SELECT DISTINCT transfer_id FROM new_entries) n
     WHERE NOT EXISTS (SELECT 1 FROM transfers t
                        WHERE t.id = n.transfer_id AND t.xact_id = pg_current_xact_id())
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entries of transfer % must be written with the transfer', transfer
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'entries_same_transaction';
    END IF;

    -- Every entry of the transfer from the statement's lowest id on is one of the statement's.
    SELECT n.transfer_id, n.first_id INTO transfer, first_id
      FROM (SELECT transfer_id, min(id) AS first_id, count(*) AS written
              FROM new_entries GROUP BY transfer_id) n
     WHERE (SELECT count(*) FROM entries e
             WHERE e.transfer_id = n.transfer_id AND e.id >= n.first_id) <> n.written
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % of transfer % is not above the transfer''s earlier entries',
                first_id, transfer
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'entries_in_order';
    END IF;

    -- The statement's sum and count per transfer and asset, for the deferred balance check.
    -- An entry whose account does not exist has no asset: refused.
    WITH sums AS (
        SELECT n.transfer_id, a.asset, sum(n.amount) AS amount, count(*) AS entries,
               min(n.account_id) FILTER (WHERE a.id IS NULL) AS missing
          FROM new_entries n LEFT JOIN accounts a ON a.id = n.account_id
         GROUP BY n.transfer_id, a.asset
    ), queued AS (
        INSERT INTO ledger_pending_checks (transfer_id, asset, amount, entries)
        SELECT transfer_id, asset, amount, entries FROM sums WHERE asset IS NOT NULL
    )
    SELECT min(s.missing) INTO missing FROM sums s;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'entry refers to account %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'entries_account_id_fkey';
    END IF;

    IF current_setting('coinhub.ledger_apply', true) = 'deferred' THEN
        INSERT INTO ledger_unapplied (transfer_id, first_entry, last_entry)
        SELECT transfer_id, min(id), max(id) FROM new_entries GROUP BY transfer_id;
        RETURN NULL;
    END IF;
    SELECT array_agg(account_id ORDER BY account_id), array_agg(amount ORDER BY account_id)
      INTO ids, amounts
      FROM (SELECT account_id, sum(amount) AS amount FROM new_entries GROUP BY account_id) d;
    PERFORM ledger_apply_deltas(ids, amounts);
    RETURN NULL;
END $$;

-- `entries_balanced`: the pending sums of NEW's transfer, checked and removed together.
CREATE OR REPLACE FUNCTION ledger_run_pending_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    entry_count NUMERIC;
    unbalanced_asset TEXT;
    unbalanced_sum NUMERIC;
BEGIN
    -- Gone: checked with another pending row of its transfer.
    IF NOT EXISTS (SELECT 1 FROM ledger_pending_checks WHERE id = NEW.id) THEN
        RETURN NULL;
    END IF;
    SELECT sum(entries) INTO entry_count
      FROM ledger_pending_checks WHERE transfer_id = NEW.transfer_id;
    IF entry_count < 2 THEN
        -- Entries checked before count too.
        SELECT count(*) INTO entry_count FROM entries WHERE transfer_id = NEW.transfer_id;
        IF entry_count < 2 THEN
            RAISE EXCEPTION 'transfer % has % entries, needs at least 2',
                    NEW.transfer_id, entry_count
                USING ERRCODE = 'check_violation', CONSTRAINT = 'transfers_balanced';
        END IF;
    END IF;
    SELECT asset, sum(amount) INTO unbalanced_asset, unbalanced_sum
      FROM ledger_pending_checks
     WHERE transfer_id = NEW.transfer_id
     GROUP BY asset
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entries of transfer % sum to % %, not zero',
                NEW.transfer_id, unbalanced_sum, unbalanced_asset
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfers_balanced';
    END IF;
    DELETE FROM ledger_pending_checks WHERE transfer_id = NEW.transfer_id;
    RETURN NULL;
END $$;

-- `transfers_balanced`: the transfer has entries (each statement of them queued its check).
CREATE OR REPLACE FUNCTION ledger_check_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME <> 'transfers' THEN
        PERFORM ledger_assert_balanced(NEW.transfer_id);
    ELSIF NOT EXISTS (SELECT 1 FROM entries WHERE transfer_id = NEW.id) THEN
        RAISE EXCEPTION 'transfer % has 0 entries, needs at least 2', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfers_balanced';
    END IF;
    RETURN NULL;
END $$;
