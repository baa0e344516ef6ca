-- The entries' statement trigger proves that a statement's transfers were written in its
-- transaction with one primary-key probe per transfer, instead of an anti join that PostgreSQL
-- may plan as a scan of all of `transfers`.
--
-- Why: the check joined the statement's distinct transfer ids (estimated at 200 for a
-- transition table of a few hundred entries; a settlement has one) against `transfers`. With
-- that estimate the planner preferred one pass over `transfers_pkey` in key order, filtering
-- every row by `xact_id` and keeping the result for the join, to 200 probes: with sequential
-- scans off (0022) a full index scan is still allowed. A new transfer's id (UUID version 7,
-- time-ordered) sorts last, so the pass read every transfer ever written, heap row included:
-- in the settlement benchmark on a database that already held 5 M trades (~7,300 transfers)
-- the check took 1.37 ms a batch against 0.12 ms on a new one, and it grows with the
-- journal (docs/benchmarks.md, 2026-12-08). A loop over the statement's transfer ids with an
-- equality on the key has no such plan.
--
-- The rest of the function is 0025's, unchanged. Its settings are 0022's and 0029's (a
-- `CREATE OR REPLACE` drops them otherwise).
CREATE OR REPLACE FUNCTION ledger_apply_entries() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $$
DECLARE
    transfer UUID;
    first_id BIGINT;
    missing BIGINT;
    ids BIGINT[];
    amounts NUMERIC[];
BEGIN
    -- One probe of `transfers_pkey` per transfer of the statement (almost always one).
    FOR transfer IN SELECT DISTINCT transfer_id FROM new_entries LOOP
        IF NOT EXISTS (SELECT 1 FROM transfers t
                        WHERE t.id = transfer AND t.xact_id = pg_current_xact_id()) THEN
            RAISE EXCEPTION 'entries of transfer % must be written with the transfer', transfer
                USING ERRCODE = 'integrity_constraint_violation',
                      CONSTRAINT = 'entries_same_transaction';
        END IF;
    END LOOP;

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
        INSERT INTO ledger_unapplied (transfer_id, first_entry, last_entry, account_ids, amounts)
        SELECT d.transfer_id, min(d.lowest), max(d.highest),
               array_agg(d.account_id ORDER BY d.account_id),
               array_agg(d.amount ORDER BY d.account_id)
          FROM (SELECT n.transfer_id, n.account_id, sum(n.amount) AS amount,
                       min(n.id) AS lowest, max(n.id) AS highest
                  FROM new_entries n GROUP BY n.transfer_id, n.account_id) d
         GROUP BY d.transfer_id;
        RETURN NULL;
    END IF;
    SELECT array_agg(account_id ORDER BY account_id), array_agg(amount ORDER BY account_id)
      INTO ids, amounts
      FROM (SELECT account_id, sum(amount) AS amount FROM new_entries GROUP BY account_id) d;
    PERFORM ledger_apply_deltas(ids, amounts);
    RETURN NULL;
END $$;

