-- A transaction may write a transfer's entries first and apply them to the balances later in
-- the same transaction; and applying locks and checks the accounts in one statement instead
-- of two.
--
-- Why: a trade settlement batch writes one netted transfer of hundreds of entries, and a
-- market's batches apply their entries one at a time (each waits for the batch ahead to
-- commit, which holds the same accounts' row locks). Until now everything the entries'
-- `INSERT` does ran in that serial part: the rows and their three index entries, the two
-- integrity checks, the locks, the non-negative check and the balance update (~16–19 ms for
-- 800 accounts on the test machine), then the deferred balance checks at `COMMIT`. Writing
-- the entries and running their checks before the batch ahead commits leaves only the locks,
-- the non-negative check and the update for the serial part: `pgbench`, two sessions taking
-- turns on the same 800 accounts, 55–63 → 87–98 transfers/s (docs/benchmarks.md).
--
-- How:
-- * `SET LOCAL coinhub.ledger_apply = 'deferred'` before an `INSERT` into `entries` makes the
--   statement trigger (`entries_apply`) run its integrity checks as before, then queue one
--   `ledger_unapplied` row per transfer (the statement's first and last entry id) instead of
--   touching `accounts`. Without the setting (every other caller) it applies at once, as
--   before.
-- * `DELETE FROM ledger_unapplied WHERE transfer_id = …` applies them: the row trigger
--   `ledger_unapplied_apply` sums the row's entries per account and applies the sums.
-- * At `COMMIT` the deferred constraint trigger `entries_applied` refuses a transaction that
--   still has an unapplied row: entries are never committed without their balance change.
--
-- The guarantees of 0009 still hold, and cover the deferred way too:
-- * balances change only through entries: `accounts_guard` is unchanged, and both ways update
--   `accounts` from a trigger (depth 2); `ledger_apply_deltas` called directly fails there;
-- * each entry is applied exactly once: a statement's entries are either applied by its
--   trigger or queued as one `ledger_unapplied` row; rows are written only by the trigger
--   (`ledger_unapplied_guard`, depth check), never changed, never truncated, and deleting
--   one (the only way to apply it) removes it. The rows of a transaction are never visible
--   to another: they are all deleted before it commits;
-- * a row's id range holds exactly its statement's entries of that transfer: `entries_in_order`
--   (0009) refuses any later entry of the transfer below its highest id;
-- * no balance below zero: the accounts of each application are locked in id order (no
--   deadlock between two writers), and the check reads the locked (latest) rows. It is the
--   same error as before: `accounts_balance_non_negative` with the account id in DETAIL;
--   the `CHECK` on `accounts` stays the backstop;
-- * references: an entry's account must exist (`entries_account_id_fkey`, checked when it
--   is written and when it is applied; accounts are never deleted).

CREATE TABLE ledger_unapplied (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id UUID NOT NULL,
    first_entry BIGINT NOT NULL,
    last_entry  BIGINT NOT NULL CHECK (last_entry >= first_entry)
);

-- Locks the accounts `ids` (ascending, distinct) in id order, checks that each exists and that
-- adding `amounts` (signed: + debit, − credit; same order) keeps it at or above zero on its
-- normal side, then applies them. Only a trigger may call it (the update is refused at depth
-- 1 by `accounts_guard`).
CREATE FUNCTION ledger_apply_deltas(ids BIGINT[], amounts NUMERIC[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    locked BIGINT;
    short BIGINT;
    missing BIGINT;
BEGIN
    -- FOR NO KEY UPDATE returns each row's latest version once it holds the lock, so the
    -- check sees what the update will change.
    SELECT count(*), min(l.id) FILTER (WHERE l.would_be < 0) INTO locked, short
      FROM (SELECT a.id,
                   a.balance + CASE a.normal_side WHEN 'debit' THEN d.amount ELSE -d.amount END
                       AS would_be
              FROM accounts a
              JOIN unnest(ids, amounts) AS d (account_id, amount) ON a.id = d.account_id
             ORDER BY a.id
               FOR NO KEY UPDATE OF a) l;
    IF locked <> cardinality(ids) THEN
        SELECT d.account_id INTO missing FROM unnest(ids) AS d (account_id)
         WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = d.account_id) LIMIT 1;
        RAISE EXCEPTION 'entry refers to account %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'entries_account_id_fkey';
    END IF;
    IF short IS NOT NULL THEN
        RAISE EXCEPTION 'account % would go below zero', short
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'accounts_balance_non_negative',
                  DETAIL = short::text;
    END IF;
    UPDATE accounts a
       SET balance = a.balance + CASE a.normal_side WHEN 'debit' THEN d.amount ELSE -d.amount END
      FROM unnest(ids, amounts) AS d (account_id, amount)
     WHERE a.id = d.account_id;
END $$;

-- 0009's statement trigger: the same integrity checks, then apply now or queue.
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

    IF current_setting('coinhub.ledger_apply', true) = 'deferred' THEN
        -- Checked now as well as when applied: the transfer's balance check (which joins the
        -- entries to their accounts' assets) may run before the application.
        SELECT n.account_id INTO missing
          FROM (SELECT DISTINCT account_id FROM new_entries) n
         WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.account_id)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'entry refers to account %, which does not exist', missing
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'entries_account_id_fkey';
        END IF;
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

-- Applies one queued statement's entries when its row is deleted.
CREATE FUNCTION ledger_apply_unapplied() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[];
    amounts NUMERIC[];
BEGIN
    SELECT array_agg(account_id ORDER BY account_id), array_agg(amount ORDER BY account_id)
      INTO ids, amounts
      FROM (SELECT e.account_id, sum(e.amount) AS amount FROM entries e
             WHERE e.transfer_id = OLD.transfer_id
               AND e.id BETWEEN OLD.first_entry AND OLD.last_entry
             GROUP BY e.account_id) d;
    PERFORM ledger_apply_deltas(ids, amounts);
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_unapplied_apply AFTER DELETE ON ledger_unapplied
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_unapplied();

-- Rows come only from the entries' trigger (depth 1, so this runs at depth 2), and are
-- never changed.
CREATE FUNCTION ledger_unapplied_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND pg_trigger_depth() >= 2 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'ledger_unapplied rows are written by the entries trigger and removed by DELETE only (%)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'ledger_unapplied_guard';
END $$;

CREATE TRIGGER ledger_unapplied_guard BEFORE INSERT OR UPDATE ON ledger_unapplied
    FOR EACH ROW EXECUTE FUNCTION ledger_unapplied_guard();
CREATE TRIGGER ledger_unapplied_no_truncate BEFORE TRUNCATE ON ledger_unapplied
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_unapplied_guard();

-- At commit: no queued entries left unapplied.
CREATE FUNCTION ledger_check_applied() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_unapplied WHERE id = NEW.id) THEN
        RAISE EXCEPTION 'entries % to % of transfer % were written but not applied to the balances',
                NEW.first_entry, NEW.last_entry, NEW.transfer_id
            USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'entries_applied';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER entries_applied AFTER INSERT ON ledger_unapplied
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_applied();
