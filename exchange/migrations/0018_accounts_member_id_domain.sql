-- `accounts.member_id`'s format is checked by a domain instead of a CHECK constraint, so it
-- is checked when a member id is written (an account opened), not at every balance update.
--
-- Why: PostgreSQL evaluates every CHECK constraint of a table on every UPDATE of a row,
-- whichever columns change. A trade settlement batch updates the balances of hundreds of
-- accounts (0016, 0017), and the member id's regular expression (`{1,64}` repeats its
-- character class 64 times in PostgreSQL's regex automaton) was a third of each update: in
-- `pgbench`, one transaction updating 500 of 800 accounts took 4.1–4.3 ms with the CHECK and
-- 2.3–2.4 ms with the domain (docs/benchmarks.md, 2026-12-07). A domain's check runs only
-- where a value is converted to the domain: an `INSERT`, or an `UPDATE` that sets the
-- column. An update that leaves `member_id` alone copies the old, already checked, value.
--
-- The rule is unchanged: the same expression, and a member id still never changes once an
-- account is opened (`accounts_guard`, 0001). A bad member id is refused with
-- `check_violation` (23514) as before; the constraint is now named `ledger_member_id_check`.
-- Platform accounts keep a NULL member id (a domain's check passes NULL, as the CHECK did).
--
-- The column's type changes, which rewrites `accounts` and its indexes in this migration's
-- transaction (migrations run with the exchange stopped); the rewrite keeps 0017's fill
-- factor. Clients read the column as `text`: PostgreSQL describes a domain column by its
-- base type.
CREATE DOMAIN ledger_member_id AS TEXT
    CONSTRAINT ledger_member_id_check CHECK (VALUE ~ '^[A-Za-z0-9_.-]{1,64}$');

ALTER TABLE accounts DROP CONSTRAINT accounts_member_id_check;
ALTER TABLE accounts ALTER COLUMN member_id TYPE ledger_member_id;
