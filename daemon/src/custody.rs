//! Custody glue of coinhubd: key A's creation (`coinhubd init`), its public derivation data,
//! and the self-check that Vault can still decrypt it. Key material itself is handled by
//! `coinhub_custody` (zeroized, never logged).

use std::str::FromStr;
use std::time::Duration;

use bitcoin::bip32::Xpub;
use coinhub_custody::derivation::{self, MasterKey};
use coinhub_custody::keystore::{self, EncryptedSeed, HotKey, TransitKey, Vault};
use coinhub_custody::mnemonic::Mnemonic;
use sqlx::PgPool;

use crate::config::VaultConfig;

/// Key A's public derivation data, loaded from `custody_keys`.
pub struct AccountKeys {
    evm_account_xpub: Xpub,
}

impl AccountKeys {
    /// Loads key A's account xpubs.
    ///
    /// Errors: no key A (`coinhubd init` was not run), an unreadable xpub, or the database's.
    pub async fn load(pool: &PgPool) -> anyhow::Result<Self> {
        let xpub: Option<String> =
            sqlx::query_scalar("SELECT evm_account_xpub FROM custody_keys WHERE key_id = 'a'")
                .fetch_optional(pool)
                .await?;
        let Some(xpub) = xpub else {
            anyhow::bail!("custody key a does not exist: run `coinhubd init` first");
        };
        let evm_account_xpub = Xpub::from_str(&xpub)
            .map_err(|e| anyhow::anyhow!("stored evm_account_xpub of key a is invalid: {e}"))?;
        Ok(Self { evm_account_xpub })
    }

    /// The EIP-55 address at BIP44 `m/44'/60'/0'/0/index`, derived from the account xpub
    /// alone.
    ///
    /// Errors: an index of 2^31 or more (hardened range).
    pub fn evm_deposit_address(&self, index: u32) -> Result<String, derivation::DerivationError> {
        let address = derivation::evm_deposit_address(&self.evm_account_xpub, index)?;
        Ok(derivation::to_eip55(&address))
    }
}

fn vault_client(config: &VaultConfig) -> Result<Vault, keystore::KeystoreError> {
    Vault::new(
        &config.address,
        config.token.clone(),
        Duration::from_millis(config.timeout_ms),
    )
}

/// Creates key A: a fresh 24-word BIP39 seed, envelope-encrypted with the `[vault]` transit
/// key, stored as ciphertext beside its EVM account xpub (`m/44'/60'/0'`), which is
/// returned.
///
/// Nothing is written unless Vault encrypted the seed: sealed, unreachable or refusing the
/// token fails first with a clear error.
///
/// Errors: key A already exists; Vault's ([`keystore::KeystoreError`]); the database's.
pub async fn init_key_a(pool: &PgPool, config: &VaultConfig) -> anyhow::Result<String> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM custody_keys WHERE key_id = 'a')")
            .fetch_one(pool)
            .await?;
    if exists {
        anyhow::bail!("custody key a already exists; refusing to replace it");
    }
    let vault = vault_client(config)?;
    vault.check().await?;
    let mnemonic = Mnemonic::generate()?;
    let xpub = MasterKey::from_seed(&mnemonic.to_seed())?.evm_account_xpub()?;
    let transit = TransitKey {
        mount: config.transit_mount.clone(),
        name: config.transit_key.clone(),
    };
    let encrypted = keystore::encrypt_seed(&vault, &transit, HotKey::A, &mnemonic).await?;
    drop(mnemonic);
    let inserted = sqlx::query(
        "INSERT INTO custody_keys (key_id, encrypted_seed, evm_account_xpub) VALUES ('a', $1, $2)
         ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(serde_json::to_value(&encrypted)?)
    .bind(xpub.to_string())
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        anyhow::bail!("custody key a was created concurrently by another `coinhubd init`");
    }
    tracing::info!(xpub = %xpub, transit_key = %config.transit_key, "custody key a created");
    Ok(xpub.to_string())
}

/// Decrypts key A (one audited Vault `transit/decrypt`) and checks that it derives the stored
/// xpub; the plaintext is zeroized before returning.
///
/// Errors: no key A, Vault's, a corrupt record, or an xpub mismatch.
pub async fn verify_key_a(pool: &PgPool, config: &VaultConfig) -> anyhow::Result<()> {
    let row: Option<(serde_json::Value, String)> = sqlx::query_as(
        "SELECT encrypted_seed, evm_account_xpub FROM custody_keys WHERE key_id = 'a'",
    )
    .fetch_optional(pool)
    .await?;
    let Some((encrypted, stored_xpub)) = row else {
        anyhow::bail!("custody key a does not exist: run `coinhubd init` first");
    };
    let encrypted: EncryptedSeed = serde_json::from_value(encrypted)?;
    let mnemonic = keystore::decrypt_seed(&vault_client(config)?, HotKey::A, &encrypted).await?;
    let xpub = MasterKey::from_seed(&mnemonic.to_seed())?.evm_account_xpub()?;
    drop(mnemonic);
    anyhow::ensure!(
        xpub.to_string() == stored_xpub,
        "key a decrypts to another xpub than the one stored"
    );
    Ok(())
}
