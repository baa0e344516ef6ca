-- A deferred statement's net change per account is computed when its entries are written and
-- kept in its `ledger_unapplied` row, instead of being summed from the entries again when the
-- row is applied.
--
-- Why: applying is the part of a trade settlement that runs one batch at a time (it waits for
-- the batch ahead to commit, which holds the same accounts). It read the statement's entries
-- back (400–500 of them at 200 members) and summed them per account before it could lock and
-- update the accounts. The entries' statement trigger has them at hand already, while the
-- batch ahead is still being written.
--
-- The guarantees of 0016 hold: the row's `account_ids` (ascending) and `amounts` are the net
-- change per account of the statement's entries of its transfer, computed by the entries'
-- trigger from its transition table; rows are written only by that trigger and never changed
-- (`ledger_unapplied_guard`), so applying them applies exactly those entries, once.
ALTER TABLE ledger_unapplied
    ADD COLUMN account_ids BIGINT[] NOT NULL,
    ADD COLUMN amounts NUMERIC[] NOT NULL,
    ADD CONSTRAINT ledger_unapplied_deltas_match
        CHECK (cardinality(account_ids) = cardinality(amounts));

-- 0021's statement trigger, queueing the deltas with the row.
CREATE OR REPLACE FUNCTION ledger_apply_entries() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
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

-- Applies one queued statement's net change when its row is deleted.
CREATE OR REPLACE FUNCTION ledger_apply_unapplied() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    PERFORM ledger_apply_deltas(OLD.account_ids, OLD.amounts);
    RETURN NULL;
END $$;
