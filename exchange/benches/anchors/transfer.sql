-- One transfer of the machine anchors (exchange/benches/anchors/run, a pgbench script; the
-- runner wraps it in a transaction, alone or 1,000 times): 1 base unit from a random account
-- to another (credit is never debit: the offset is 1 to :accounts - 1), a row and two balance
-- updates.
\set debit random(1, :accounts)
\set credit 1 + (:debit + random(0, :accounts - 2)) % :accounts
INSERT INTO anchor_transfers (debit_account, credit_account, amount) VALUES (:debit, :credit, 1);
UPDATE anchor_accounts SET balance = balance - 1 WHERE id = :debit;
UPDATE anchor_accounts SET balance = balance + 1 WHERE id = :credit;
