-- `accounts_guard` (0001) becomes three triggers that fire only when an update touches what
-- they guard, with their conditions evaluated without calling PL/pgSQL.
--
-- Why: a settlement updates the balances of hundreds of accounts, and the row trigger ran a
-- PL/pgSQL function for every one of them, to compare the key columns (which the update
-- does not set) and the trigger depth. `pgbench`, 400 of 800 accounts updated in one
-- statement: 1.88 ms with the PL/pgSQL row trigger, 1.42 ms with these, 1.24 ms without any
-- (docs/benchmarks.md, 2026-12-07).
--
-- The rules and their errors are unchanged:
-- * `accounts_key_fixed`: an account's id, owner, asset and kind never change. The trigger
--   fires only for an `UPDATE` that sets one of them (`UPDATE OF`), and refuses it if a value
--   differs (id is new here: entries refer to it);
-- * `accounts_balance_from_entries`: an account opens at zero, and its balance changes only
--   inside the ledger's triggers. The update trigger fires for an `UPDATE` that sets the
--   balance, and refuses it at trigger depth 0 (a statement of a client, or a ledger
--   function called directly). The ledger's own update runs inside the entries' triggers
--   (depth 1 when `WHEN` is evaluated; the old function, called one level deeper, saw 2).

DROP TRIGGER accounts_guard ON accounts;
DROP FUNCTION ledger_guard_account();

-- Raises the error of rule TG_ARGV[0] for the account in NEW or OLD.
CREATE FUNCTION ledger_refuse_account_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    CASE TG_ARGV[0]
    WHEN 'opened_nonzero' THEN
        RAISE EXCEPTION 'accounts open with a zero balance'
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'accounts_balance_from_entries';
    WHEN 'key_changed' THEN
        RAISE EXCEPTION 'account % may not change id, owner, asset or kind', OLD.id
            USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'accounts_key_fixed';
    ELSE
        RAISE EXCEPTION 'account % balance changes only through entries', OLD.id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'accounts_balance_from_entries';
    END CASE;
END $$;

CREATE TRIGGER accounts_open_at_zero BEFORE INSERT ON accounts
    FOR EACH ROW WHEN (NEW.balance <> 0)
    EXECUTE FUNCTION ledger_refuse_account_change('opened_nonzero');
CREATE TRIGGER accounts_key_fixed
    BEFORE UPDATE OF id, member_id, asset, kind, normal_side, owner_type ON accounts
    FOR EACH ROW
    WHEN ((NEW.id, NEW.member_id, NEW.asset, NEW.kind, NEW.normal_side, NEW.owner_type)
          IS DISTINCT FROM (OLD.id, OLD.member_id, OLD.asset, OLD.kind, OLD.normal_side,
                            OLD.owner_type))
    EXECUTE FUNCTION ledger_refuse_account_change('key_changed');
CREATE TRIGGER accounts_balance_from_entries BEFORE UPDATE OF balance ON accounts
    FOR EACH ROW WHEN (pg_trigger_depth() < 1 AND NEW.balance IS DISTINCT FROM OLD.balance)
    EXECUTE FUNCTION ledger_refuse_account_change('balance_changed');
