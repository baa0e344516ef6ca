\set debit random(1, :accounts)
\set credit 1 + (:debit + random(0, :accounts - 2)) % :accounts
INSERT INTO anchor_transfers (debit_account, credit_account, amount) VALUES (:debit, :credit, 1);
UPDATE anchor_accounts SET balance = balance - 1 WHERE id = :debit;
UPDATE anchor_accounts SET balance = balance + 1 WHERE id = :credit;
