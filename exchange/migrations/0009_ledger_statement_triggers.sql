-- Entries are checked and applied to balances once per INSERT statement instead of once per
-- row.
--
-- Why: 0001's row triggers ran, for every entry, `entries_same_transaction` (two index probes)
-- and `entries_apply` (an UPDATE of the account, which fires `accounts_guard`): ~100 µs an
-- entry on the 2-core test machine. A trade settlement nets a whole batch into one transfer
-- with one entry per account it changed (hundreds of entries in one statement): inserting a
-- 500-entry transfer took 52 ms with the row triggers, under 10 ms without any trigger
-- (docs/benchmarks.md). Of what remained, the two foreign keys of `entries` were most: each
-- entry's checks lock its transfer's row and its account's row again (~20 µs an entry). The
-- statement trigger below proves both for the whole statement instead.
--
-- The guarantees are those of 0001 and 0006:
-- * entries belong to a transfer written in the same database transaction
--   (`entries_same_transaction`);
-- * a transfer's new entries have ids above its earlier entries (`entries_in_order`). The
--   entries of one statement queue their deferred balance checks together, so their order
--   among themselves does not matter (the one with the highest id checks the transfer, after
--   all of them are visible); an entry below one written by an earlier statement is refused;
-- * no balance goes below zero: the statement's accounts are locked in id order (concurrent
--   transfers over the same accounts wait for each other, they do not deadlock), then the
--   statement's net change per account is checked and applied. An account that would go below
--   zero refuses the whole statement with `accounts_balance_non_negative` and the account id
--   in DETAIL, as 0001's row trigger did. The check is on each account's net change in the
--   statement, so its outcome no longer depends on the order of rows within one statement;
-- * balances change only through entries (`accounts_guard`, unchanged: the UPDATE below runs
--   at trigger depth 2);
-- * the deferred balance checks (`transfers_balanced`, `entries_balanced`) are unchanged;
-- * references: an entry's transfer exists (it was written in this transaction, checked
--   above) and its account exists (every account of the statement is locked, and counted);
--   transfers were already append-only, and accounts now cannot be deleted or truncated
--   either, so nothing an entry refers to can disappear. Errors keep the foreign keys' names
--   (`entries_account_id_fkey`, SQLSTATE 23503).

DROP TRIGGER entries_same_transaction ON entries;
DROP TRIGGER entries_apply ON entries;
ALTER TABLE entries DROP CONSTRAINT entries_transfer_id_fkey;
ALTER TABLE entries DROP CONSTRAINT entries_account_id_fkey;

CREATE FUNCTION ledger_accounts_kept() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts are never deleted (entries refer to them)'
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'accounts_kept';
END $$;

CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_accounts_kept();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_kept();

CREATE FUNCTION ledger_apply_entries() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    transfer UUID;
    first_id BIGINT;
    account BIGINT;
    accounts_found BIGINT;
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

    SELECT count(*) INTO accounts_found
      FROM (SELECT 1 FROM accounts WHERE id IN (SELECT account_id FROM new_entries)
             ORDER BY id FOR NO KEY UPDATE) locked;
    IF accounts_found <> (SELECT count(DISTINCT account_id) FROM new_entries) THEN
        SELECT n.account_id INTO account FROM new_entries n
         WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.account_id) LIMIT 1;
        RAISE EXCEPTION 'entry refers to account %, which does not exist', account
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'entries_account_id_fkey';
    END IF;
    SELECT a.id INTO account
      FROM accounts a
      JOIN (SELECT account_id, sum(amount) AS amount FROM new_entries GROUP BY account_id) d
        ON a.id = d.account_id
     WHERE a.balance + CASE a.normal_side WHEN 'debit' THEN d.amount ELSE -d.amount END < 0
     ORDER BY a.id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % would go below zero', account
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'accounts_balance_non_negative',
                  DETAIL = account::text;
    END IF;
    UPDATE accounts a
       SET balance = a.balance + CASE a.normal_side WHEN 'debit' THEN d.amount ELSE -d.amount END
      FROM (SELECT account_id, sum(amount) AS amount FROM new_entries GROUP BY account_id) d
     WHERE a.id = d.account_id;
    RETURN NULL;
END $$;

CREATE TRIGGER entries_apply AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_entries();
