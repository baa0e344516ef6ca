-- The machine anchors' ledger (exchange/benches/anchors/run): the plainest double-entry
-- ledger PostgreSQL can keep, to measure what this machine gives any PostgreSQL ledger, apart
-- from Coinhub's own. An account holds a balance in base units that may not go below zero; a
-- transfer is a row naming the account it debits and the one it credits, and the two balance
-- updates. No triggers, no journal checks, no read models, and no foreign keys: a key check
-- locks the account row it finds (`FOR KEY SHARE`), which made a transfer 1.3x (pipelined) to
-- 2.5x (in a server-side loop) as costly on a tenth VM (docs/benchmarks.md); Coinhub's
-- journal checks its accounts once per statement instead.
CREATE TABLE anchor_accounts (
    id      BIGINT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);
CREATE TABLE anchor_transfers (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    debit_account  BIGINT NOT NULL,
    credit_account BIGINT NOT NULL,
    amount         BIGINT NOT NULL CHECK (amount > 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- :accounts accounts (a psql variable), each opened with 10^12 base units, so that no
-- transfer of the run can take one below zero.
INSERT INTO anchor_accounts (id, balance)
SELECT n, 1000000000000 FROM generate_series(1, :accounts) AS n;
VACUUM ANALYZE anchor_accounts;
