-- The balance check of a transfer runs once per transfer instead of once per entry.
--
-- 0001's deferred `entries_balanced` trigger re-summed the whole transfer for each of its
-- entries: O(legs²) per transfer (~115 ms for a 426-leg trade settlement). The guarantees are
-- unchanged — at commit (or at `SET CONSTRAINTS … IMMEDIATE`) every transfer has at least two
-- entries and they sum to zero per asset — but an entry's deferred event now checks its
-- transfer only if it is the transfer's latest entry (one index probe otherwise):
--
-- * entries of a transfer are written in its own database transaction (0001's
--   `entries_same_transaction`), so no other session adds to it;
-- * entries are append-only (no UPDATE, DELETE or TRUNCATE), and from here on a transfer's
--   entries get strictly increasing ids (an entry below the transfer's highest id is
--   refused, which also covers `OVERRIDING SYSTEM VALUE`), so "the entry with the highest id"
--   is the last one written;
-- * every entry queues its own deferred event, and PostgreSQL re-queues events fired inside a
--   subtransaction that is rolled back. When the last entry's event fires, every entry of the
--   transfer is visible and the whole transfer is checked. An entry added after an earlier
--   check (after `SET CONSTRAINTS … IMMEDIATE`) queues a new event, which checks again.
--
-- The transfer row's own deferred event (`transfers_balanced`) still checks the transfer once,
-- which also catches a transfer with no entries at all.

-- The lookups below: a transfer's entries by id.
CREATE INDEX entries_transfer_id_id ON entries (transfer_id, id);
DROP INDEX entries_transfer_id;

-- Checks one transfer: at least two entries, zero sum per asset.
CREATE FUNCTION ledger_assert_balanced(transfer UUID) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    entry_count BIGINT;
    unbalanced_asset TEXT;
    unbalanced_sum NUMERIC;
BEGIN
    SELECT count(*) INTO entry_count FROM entries WHERE transfer_id = transfer;
    IF entry_count < 2 THEN
        RAISE EXCEPTION 'transfer % has % entries, needs at least 2', transfer, entry_count
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfers_balanced';
    END IF;
    SELECT a.asset, sum(e.amount) INTO unbalanced_asset, unbalanced_sum
      FROM entries e JOIN accounts a ON a.id = e.account_id
     WHERE e.transfer_id = transfer
     GROUP BY a.asset
    HAVING sum(e.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entries of transfer % sum to % %, not zero',
                transfer, unbalanced_sum, unbalanced_asset
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfers_balanced';
    END IF;
END $$;

-- The transfer row's deferred check (`transfers_balanced`, unchanged trigger).
CREATE OR REPLACE FUNCTION ledger_check_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'transfers' THEN
        PERFORM ledger_assert_balanced(NEW.id);
    ELSE
        PERFORM ledger_assert_balanced(NEW.transfer_id);
    END IF;
    RETURN NULL;
END $$;

-- An entry's deferred check: only the transfer's latest entry checks the whole transfer.
CREATE FUNCTION ledger_check_entry_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM entries
                   WHERE transfer_id = NEW.transfer_id AND id > NEW.id) THEN
        PERFORM ledger_assert_balanced(NEW.transfer_id);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER entries_balanced ON entries;
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_transfer();

-- Entries belong to a transfer written in the same database transaction, and each new entry
-- of a transfer has a higher id than the ones before it.
CREATE OR REPLACE FUNCTION ledger_entry_same_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM transfers
                   WHERE id = NEW.transfer_id AND xact_id = pg_current_xact_id()) THEN
        RAISE EXCEPTION 'entries of transfer % must be written with the transfer', NEW.transfer_id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'entries_same_transaction';
    END IF;
    IF EXISTS (SELECT 1 FROM entries WHERE transfer_id = NEW.transfer_id AND id >= NEW.id) THEN
        RAISE EXCEPTION 'entry % of transfer % is not above the transfer''s earlier entries',
                NEW.id, NEW.transfer_id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'entries_in_order';
    END IF;
    RETURN NEW;
END $$;
