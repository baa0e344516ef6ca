-- API key secrets at rest are envelope-encrypted with the `[vault]` transit key
-- (`exchange/src/api/secrets.rs`): `secret_sealed` holds the JSON envelope
-- (`coinhub_custody::keystore::Envelope`: wrapped data key, nonce, AES-256-GCM ciphertext,
-- associated data `coinhub:api-key:{key_id}`), and the plaintext `secret` is NULL.
--
-- Rows created before this migration keep their plaintext `secret` until
-- `coinhub-exchange run` starts with a `[vault]` table: it seals each one and clears the
-- plaintext in the same UPDATE (`keys::seal_stored`). Exactly one of the two is ever set.
ALTER TABLE api_keys ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE api_keys ADD COLUMN secret_sealed JSONB;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_secret_stored_once
    CHECK (num_nonnulls(secret, secret_sealed) = 1);
COMMENT ON COLUMN api_keys.secret IS
    'Plaintext HMAC secret of a key created before 0011; NULL once sealed into secret_sealed.';
COMMENT ON COLUMN api_keys.secret_sealed IS
    'The HMAC secret envelope-encrypted with the [vault] transit key (JSON Envelope).';
