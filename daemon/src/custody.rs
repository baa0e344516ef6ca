//! Custody glue of coinhubd: creating a hot key (`coinhubd init`), key A's public derivation
//! data, and the self-check that Vault can still decrypt it. Key material itself is handled
//! by `coinhub_custody` (zeroized, never logged).

use std::collections::BTreeMap;
use std::str::FromStr;

use bitcoin::bip32::Xpub;
use coinhub_custody::derivation::{self, MasterKey};
use coinhub_custody::keystore::{self, Envelope, HotKey};
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::utxo::{AccountXpub, Bip48ScriptType, UtxoNetwork};
use sqlx::PgPool;

use crate::config::VaultConfig;

/// Key A's public derivation data, loaded from `custody_keys`.
pub struct AccountKeys {
    evm_account_xpub: Xpub,
    /// BIP48 account xpub (with origin) per UTXO network name, e.g. `"bitcoin-regtest"`.
    utxo_account_xpubs: BTreeMap<String, String>,
}

impl AccountKeys {
    /// Loads key A's account xpubs.
    ///
    /// Errors: no key A (`coinhubd init` was not run), an unreadable xpub, or the database's.
    pub async fn load(pool: &PgPool) -> anyhow::Result<Self> {
        let row: Option<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT evm_account_xpub, utxo_account_xpubs FROM custody_keys WHERE key_id = 'a'",
        )
        .fetch_optional(pool)
        .await?;
        let Some((xpub, utxo_account_xpubs)) = row else {
            anyhow::bail!("custody key a does not exist: run `coinhubd init` first");
        };
        let evm_account_xpub = Xpub::from_str(&xpub)
            .map_err(|e| anyhow::anyhow!("stored evm_account_xpub of key a is invalid: {e}"))?;
        let utxo_account_xpubs = serde_json::from_value(utxo_account_xpubs)?;
        Ok(Self {
            evm_account_xpub,
            utxo_account_xpubs,
        })
    }

    /// The EIP-55 address at BIP44 `m/44'/60'/0'/0/index`, derived from the account xpub
    /// alone.
    ///
    /// Errors: an index of 2^31 or more (hardened range).
    pub fn evm_deposit_address(&self, index: u32) -> Result<String, derivation::DerivationError> {
        let address = derivation::evm_deposit_address(&self.evm_account_xpub, index)?;
        Ok(derivation::to_eip55(&address))
    }

    /// Key A's BIP48 account xpub (with origin) for `network`.
    ///
    /// Errors: none stored for that network (key A predates UTXO support: recreate it).
    pub fn utxo_account_xpub(&self, network: UtxoNetwork) -> anyhow::Result<AccountXpub> {
        let Some(text) = self.utxo_account_xpubs.get(network.name()) else {
            anyhow::bail!("custody key a has no BIP48 account xpub for {network}; recreate it");
        };
        text.parse()
            .map_err(|e| anyhow::anyhow!("stored BIP48 xpub of key a for {network}: {e}"))
    }
}

/// The public keys printed by `coinhubd init`.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// EVM account xpub (`m/44'/60'/0'`).
    pub evm_account_xpub: String,
    /// BIP48 account xpub with origin per UTXO network name.
    pub utxo_account_xpubs: BTreeMap<String, String>,
}

/// The BIP48 (`m/48'/coin'/0'/2'`) account xpub, with origin, of `master` for every UTXO
/// network, keyed by network name. Public data, stored beside the encrypted seed.
fn utxo_account_xpubs(master: &MasterKey) -> anyhow::Result<BTreeMap<String, String>> {
    UtxoNetwork::ALL
        .iter()
        .map(|network| {
            let xpub = master.bip48_account_xpub(*network, Bip48ScriptType::P2wsh)?;
            Ok((network.name().to_owned(), xpub.to_string()))
        })
        .collect()
}

fn key_id(key: HotKey) -> &'static str {
    match key {
        HotKey::A => "a",
        HotKey::B => "b",
    }
}

/// Creates hot key `key` (A for coinhubd; B for the cosigner, run with the cosigner's own
/// database and Vault token): a fresh 24-word BIP39 seed, envelope-encrypted with the
/// `[vault]` transit key, stored as ciphertext beside its EVM and BIP48 account xpubs, which
/// are returned.
///
/// Nothing is written unless Vault encrypted the seed: sealed, unreachable or refusing the
/// token fails first with a clear error.
///
/// Errors: the key already exists; Vault's ([`keystore::KeystoreError`]); the database's.
pub async fn init_key(
    pool: &PgPool,
    config: &VaultConfig,
    key: HotKey,
) -> anyhow::Result<CreatedKey> {
    let key_id = key_id(key);
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM custody_keys WHERE key_id = $1)")
            .bind(key_id)
            .fetch_one(pool)
            .await?;
    if exists {
        anyhow::bail!("custody key {key_id} already exists; refusing to replace it");
    }
    let vault = config.client()?;
    vault.check().await?;
    let mnemonic = Mnemonic::generate()?;
    let master = MasterKey::from_seed(&mnemonic.to_seed())?;
    let xpub = master.evm_account_xpub()?;
    let utxo_account_xpubs = utxo_account_xpubs(&master)?;
    drop(master);
    let encrypted = keystore::encrypt_seed(&vault, &config.transit_key(), key, &mnemonic).await?;
    drop(mnemonic);
    let inserted = sqlx::query(
        "INSERT INTO custody_keys (key_id, encrypted_seed, evm_account_xpub, utxo_account_xpubs)
         VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(key_id)
    .bind(serde_json::to_value(&encrypted)?)
    .bind(xpub.to_string())
    .bind(serde_json::to_value(&utxo_account_xpubs)?)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        anyhow::bail!("custody key {key_id} was created concurrently by another `coinhubd init`");
    }
    tracing::info!(%key_id, xpub = %xpub, transit_key = %config.transit_key, "custody key created");
    Ok(CreatedKey {
        evm_account_xpub: xpub.to_string(),
        utxo_account_xpubs,
    })
}

/// Decrypts key A's mnemonic (one audited Vault `transit/decrypt`) for one signing round. The
/// caller drops it (zeroizing the plaintext) as soon as the signatures are made.
///
/// Errors: no key A, Vault's, or a corrupt record.
pub async fn decrypt_key_a(pool: &PgPool, config: &VaultConfig) -> anyhow::Result<Mnemonic> {
    let row: Option<(serde_json::Value,)> =
        sqlx::query_as("SELECT encrypted_seed FROM custody_keys WHERE key_id = 'a'")
            .fetch_optional(pool)
            .await?;
    let Some((encrypted,)) = row else {
        anyhow::bail!("custody key a does not exist: run `coinhubd init` first");
    };
    let encrypted: Envelope = serde_json::from_value(encrypted)?;
    Ok(keystore::decrypt_seed(&config.client()?, HotKey::A, &encrypted).await?)
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
    let encrypted: Envelope = serde_json::from_value(encrypted)?;
    let mnemonic = keystore::decrypt_seed(&config.client()?, HotKey::A, &encrypted).await?;
    let xpub = MasterKey::from_seed(&mnemonic.to_seed())?.evm_account_xpub()?;
    drop(mnemonic);
    anyhow::ensure!(
        xpub.to_string() == stored_xpub,
        "key a decrypts to another xpub than the one stored"
    );
    Ok(())
}
