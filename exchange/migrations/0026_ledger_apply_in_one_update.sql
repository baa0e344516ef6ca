-- Applying net changes to balances is one `UPDATE`: it locks, checks and changes each account,
-- instead of a locking `SELECT … FOR NO KEY UPDATE` that checked, then the `UPDATE`.
--
-- Why: a trade settlement applies ~450 net changes, in the part of its write that runs one
-- batch at a time. The locking `SELECT` found every account a first time by its key and
-- wrote a WAL record for every row lock (~0.9 ms a batch in the settlement benchmark; 43,000
-- lock records for 60,000 trades, `pg_waldump`); the `UPDATE` found every account again.
--
-- The guarantees of 0016 hold:
-- * no balance below zero: an account is updated only if its new balance is not below zero
--   (`WHERE`, evaluated on the row's latest version once the row is locked, as PostgreSQL
--   re-checks an `UPDATE`'s condition after waiting for a concurrent one). If any account is
--   left out, the function raises `accounts_balance_non_negative` with its id in DETAIL (or
--   `entries_account_id_fkey` if it does not exist), which aborts the statement and the
--   updates already made; the `CHECK` on `accounts` stays the backstop;
-- * no deadlock between two writers: the accounts are taken in the order of `ids`, which
--   every caller passes ascending (the nested loop over `unnest` keeps it; the function plans
--   without hash or merge joins, 0022);
-- * each id must appear once (callers pass one net change per account): a repeated id updates
--   its account once, is counted as left out, and is refused.
CREATE OR REPLACE FUNCTION ledger_apply_deltas(ids BIGINT[], amounts NUMERIC[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    applied BIGINT[];
    left_out BIGINT;
BEGIN
    WITH changed AS (
        UPDATE accounts a
           SET balance = a.balance + CASE a.normal_side WHEN 'debit' THEN d.amount ELSE -d.amount END
          FROM unnest(ids, amounts) AS d (account_id, amount)
         WHERE a.id = d.account_id
           AND a.balance + CASE a.normal_side WHEN 'debit' THEN d.amount ELSE -d.amount END >= 0
        RETURNING a.id
    )
    SELECT array_agg(id) INTO applied FROM changed;
    IF coalesce(cardinality(applied), 0) = cardinality(ids) THEN
        RETURN;
    END IF;
    SELECT d.account_id INTO left_out
      FROM unnest(ids) WITH ORDINALITY AS d (account_id, position)
     WHERE NOT d.account_id = ANY (coalesce(applied, '{}'))
     ORDER BY d.position
     LIMIT 1;
    IF left_out IS NULL OR NOT EXISTS (SELECT 1 FROM accounts WHERE id = left_out) THEN
        RAISE EXCEPTION 'entry refers to account %, which does not exist', left_out
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'entries_account_id_fkey';
    END IF;
    RAISE EXCEPTION 'account % would go below zero', left_out
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'accounts_balance_non_negative',
              DETAIL = left_out::text;
END $$;
