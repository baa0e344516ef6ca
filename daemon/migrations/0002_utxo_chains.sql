-- UTXO chains (Bitcoin, Dash): deposit addresses are matched by scriptPubKey, and key A's
-- BIP48 account xpubs (one per network) are kept beside its EVM account xpub.
ALTER TABLE deposit_addresses ADD COLUMN script_pubkey BYTEA;
CREATE UNIQUE INDEX deposit_addresses_by_script ON deposit_addresses (chain, script_pubkey)
    WHERE script_pubkey IS NOT NULL;

-- {"bitcoin-regtest": "[fingerprint/48h/1h/0h/2h]tpub...", ...}
ALTER TABLE custody_keys ADD COLUMN utxo_account_xpubs JSONB NOT NULL DEFAULT '{}';
