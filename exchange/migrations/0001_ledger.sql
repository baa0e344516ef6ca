-- The exchange's double-entry journal.
--
-- Amounts are integers in an asset's base units (satoshi, wei, token units) as NUMERIC(78,0):
-- 78 digits hold any uint256. Entry amounts are signed: + is a debit, - a credit. Every
-- transfer's entries sum to zero per asset (checked at the end of the transaction, see
-- `ledger_check_transfer`), and every account's cached balance, measured on its normal side,
-- never goes below zero (see `ledger_apply_entry` and `accounts_balance_non_negative`).
-- Transfers and entries are append-only: corrections are new transfers.

-- Assets the ledger has seen: symbol -> number of decimals (from coinhubd's events).
CREATE TABLE assets (
    symbol     TEXT PRIMARY KEY CHECK (symbol ~ '^[A-Za-z0-9._-]{1,32}$'),
    decimals   SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 77),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The kinds of account, their normal side and who may own them. A later feature adds a kind
-- with one INSERT here.
CREATE TABLE account_kinds (
    kind        TEXT PRIMARY KEY CHECK (kind ~ '^[a-z_]{1,32}$'),
    normal_side TEXT NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    owner_type  TEXT NOT NULL CHECK (owner_type IN ('member', 'platform')),
    description TEXT NOT NULL,
    UNIQUE (kind, normal_side, owner_type)
);

INSERT INTO account_kinds (kind, normal_side, owner_type, description) VALUES
    ('available',   'credit', 'member',   'what the member may trade or withdraw (a liability)'),
    ('locked',      'credit', 'member',   'held for open orders and pending withdrawals (a liability)'),
    ('hot_wallet',  'debit',  'platform', 'what the platform holds on chain for this asset (an asset)'),
    ('fee_revenue', 'credit', 'platform', 'fees the platform has earned (revenue)');

-- One account per (owner, asset, kind). `member_id` is NULL for platform accounts.
-- `balance` is the sum of the account's entries on its normal side (debits minus credits for
-- debit-normal accounts, credits minus debits for credit-normal ones); only the entry trigger
-- writes it.
CREATE TABLE accounts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id   TEXT CHECK (member_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    asset       TEXT NOT NULL REFERENCES assets (symbol),
    kind        TEXT NOT NULL,
    normal_side TEXT NOT NULL,
    owner_type  TEXT NOT NULL,
    balance     NUMERIC(78, 0) NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT accounts_kind_fk FOREIGN KEY (kind, normal_side, owner_type)
        REFERENCES account_kinds (kind, normal_side, owner_type),
    CONSTRAINT accounts_owner_matches_kind
        CHECK ((owner_type = 'member') = (member_id IS NOT NULL)),
    CONSTRAINT accounts_balance_non_negative CHECK (balance >= 0),
    CONSTRAINT accounts_key UNIQUE NULLS NOT DISTINCT (member_id, asset, kind)
);

-- One business event that moves value, e.g. a deposit credit. `reference` is the external id
-- it answers to (a deposit id, an order id); (kind, reference) is unique, which makes posting
-- idempotent. `xact_id` is the database transaction that wrote it: entries may only be added
-- in that same transaction.
CREATE TABLE transfers (
    id         UUID PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind ~ '^[a-z_]{1,32}$'),
    reference  TEXT NOT NULL CHECK (length(reference) BETWEEN 1 AND 200),
    xact_id    XID8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT transfers_reference_unique UNIQUE (kind, reference)
);

-- The legs of a transfer: signed base units, + debit, - credit.
CREATE TABLE entries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id UUID NOT NULL REFERENCES transfers (id),
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    amount      NUMERIC(78, 0) NOT NULL CONSTRAINT entries_amount_non_zero CHECK (amount <> 0)
);
CREATE INDEX entries_transfer_id ON entries (transfer_id);
CREATE INDEX entries_account_id ON entries (account_id);

-- Entries belong to a transfer written in the same database transaction.
CREATE FUNCTION ledger_entry_same_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM transfers
                   WHERE id = NEW.transfer_id AND xact_id = pg_current_xact_id()) THEN
        RAISE EXCEPTION 'entries of transfer % must be written with the transfer', NEW.transfer_id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'entries_same_transaction';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER entries_same_transaction BEFORE INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_same_transaction();

-- Applies an entry to its account's cached balance. Refuses a balance below zero on the
-- account's normal side (the CHECK on accounts is the backstop); DETAIL carries the account id.
CREATE FUNCTION ledger_apply_entry() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    new_balance NUMERIC;
BEGIN
    UPDATE accounts
       SET balance = balance + CASE normal_side WHEN 'debit' THEN NEW.amount ELSE -NEW.amount END
     WHERE id = NEW.account_id
       AND balance + CASE normal_side WHEN 'debit' THEN NEW.amount ELSE -NEW.amount END >= 0
    RETURNING balance INTO new_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % would go below zero', NEW.account_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'accounts_balance_non_negative',
                  DETAIL = NEW.account_id::text;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER entries_apply AFTER INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_apply_entry();

-- At commit: a transfer has at least two entries and they sum to zero per asset.
CREATE FUNCTION ledger_check_transfer() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    transfer UUID;
    entry_count BIGINT;
    unbalanced_asset TEXT;
    unbalanced_sum NUMERIC;
BEGIN
    IF TG_TABLE_NAME = 'transfers' THEN
        transfer := NEW.id;
    ELSE
        transfer := NEW.transfer_id;
    END IF;
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
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER transfers_balanced AFTER INSERT ON transfers
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_transfer();

CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_transfer();

-- Only the entry trigger changes a cached balance; accounts open at zero and never change
-- owner, asset or kind.
CREATE FUNCTION ledger_guard_account() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.balance <> 0 THEN
            RAISE EXCEPTION 'accounts open with a zero balance'
                USING ERRCODE = 'integrity_constraint_violation',
                      CONSTRAINT = 'accounts_balance_from_entries';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.member_id, NEW.asset, NEW.kind, NEW.normal_side, NEW.owner_type)
           IS DISTINCT FROM (OLD.member_id, OLD.asset, OLD.kind, OLD.normal_side, OLD.owner_type) THEN
        RAISE EXCEPTION 'account % may not change owner, asset or kind', OLD.id
            USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'accounts_key_fixed';
    END IF;
    -- Depth 1 is a direct UPDATE; the entry trigger's UPDATE runs at depth 2.
    IF NEW.balance IS DISTINCT FROM OLD.balance AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'account % balance changes only through entries', OLD.id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'accounts_balance_from_entries';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER accounts_guard BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_guard_account();

-- The journal is append-only.
CREATE FUNCTION ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only; post a correcting transfer instead', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'ledger_append_only';
END $$;

CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
