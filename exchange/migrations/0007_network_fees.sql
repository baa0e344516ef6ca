-- Network fees the platform's hot wallet pays on chain for withdrawals.
--
-- `withdrawal.confirmed` carries this withdrawal's share of the network fee (`fee`, base units
-- of `fee_asset`, the chain's native coin: BTC for a BTC withdrawal, ETH for an ERC-20 one).
-- The `withdrawal_settle` transfer now also debits the platform's `network_fees` account of
-- `fee_asset` and credits its `hot_wallet` of `fee_asset` by that fee, so the ledger's hot
-- wallet follows what the wallet really holds. `network_fees` is an expense: debit-normal,
-- platform-owned, only ever debited (its balance is the total paid, never negative).
INSERT INTO account_kinds (kind, normal_side, owner_type, description) VALUES
    ('network_fees', 'debit', 'platform', 'network fees the hot wallet paid on chain (an expense)');

-- Whether the withdrawal's network fee is in the ledger: true when the `withdrawal_settle`
-- transfer carries it (or it was zero: nothing to book); false when it is only recorded here
-- because the ledger could not book it (its `network_fee_asset` is not a ledger asset, or the
-- hot wallet of that asset holds less than the fee in the ledger, e.g. gas topped up outside
-- the ledger); NULL when no fee was reported (older events) or the withdrawal is not
-- confirmed. Withdrawals settled before this migration are NULL: their fees were not booked.
ALTER TABLE withdrawals
    ADD COLUMN network_fee_booked BOOLEAN,
    ADD CONSTRAINT withdrawals_network_fee_booked_has_fee
        CHECK (network_fee_booked IS NULL OR network_fee IS NOT NULL);
