//! Key B as the cosigner sees it: its public data from its own `custody_keys` row (created by
//! `coinhubd cosigner init`, i.e. `crate::custody::init_key` with `HotKey::B`), the wallets
//! it co-signs (UTXO: `[A, B, C]` from the config's `hot_xpub`, the row, `backup_xpub`; EVM:
//! its Safe owner address), and the seed, decrypted from Vault for one signature at a time.

use std::collections::BTreeMap;
use std::str::FromStr;

use alloy::primitives::Address;
use bitcoin::bip32::Xpub;
use coinhub_custody::derivation::{self, MasterKey, SAFE_OWNER_BRANCH};
use coinhub_custody::keystore::{self, Envelope, HotKey, Vault};
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::utxo::{AccountXpub, MultisigScript, UtxoWallet};
use sqlx::PgPool;

use super::config::CosignerConfig;
use crate::config::ChainKind;

/// Key B's public data and the wallets it co-signs.
#[derive(Debug, Clone)]
pub struct CosignerKeys {
    /// Key B's EVM account xpub (`m/44'/60'/0'`).
    pub evm_account_xpub: Xpub,
    /// Key B's Safe owner address (account `1/0`).
    pub safe_owner: Address,
    /// The 2-of-3 wallet of each configured UTXO chain, by chain name.
    pub utxo_wallets: BTreeMap<String, UtxoWallet>,
    encrypted_seed: Envelope,
}

impl CosignerKeys {
    /// Loads key B's row (`key_id = 'b'`) and builds the wallet of every configured chain.
    ///
    /// Errors: no key B (run `coinhubd cosigner init`), an unreadable stored xpub, no BIP48
    /// xpub of B for a chain's network, a wallet the keys do not form (names the chain), or
    /// the database's.
    pub async fn load(pool: &PgPool, config: &CosignerConfig) -> anyhow::Result<Self> {
        let row: Option<(serde_json::Value, String, serde_json::Value)> = sqlx::query_as(
            "SELECT encrypted_seed, evm_account_xpub, utxo_account_xpubs
             FROM custody_keys WHERE key_id = 'b'",
        )
        .fetch_optional(pool)
        .await?;
        let Some((encrypted_seed, evm_xpub, utxo_xpubs)) = row else {
            anyhow::bail!("custody key b does not exist: run `coinhubd cosigner init` first");
        };
        let encrypted_seed: Envelope = serde_json::from_value(encrypted_seed)?;
        let evm_account_xpub = Xpub::from_str(&evm_xpub)
            .map_err(|e| anyhow::anyhow!("stored evm_account_xpub of key b is invalid: {e}"))?;
        let safe_owner = derivation::evm_address_at(&evm_account_xpub, SAFE_OWNER_BRANCH, 0)?;
        let utxo_xpubs: BTreeMap<String, String> = serde_json::from_value(utxo_xpubs)?;
        let mut utxo_wallets = BTreeMap::new();
        for (name, chain) in &config.chains {
            if chain.kind == ChainKind::Evm {
                continue;
            }
            let network = chain.utxo_network()?;
            let ours: AccountXpub = utxo_xpubs
                .get(network.name())
                .ok_or_else(|| anyhow::anyhow!("custody key b has no BIP48 xpub for {network}"))?
                .parse()?;
            let parse = |field: &str, value: &Option<String>| -> anyhow::Result<AccountXpub> {
                value
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("chains.{name}.{field}: {e}"))
            };
            let hot = parse("hot_xpub", &chain.hot_xpub)?;
            let backup = parse("backup_xpub", &chain.backup_xpub)?;
            let script = match chain.kind {
                ChainKind::Dash => MultisigScript::Sh,
                _ => MultisigScript::Wsh,
            };
            let wallet = UtxoWallet::new(network, script, [hot, ours, backup])
                .map_err(|e| anyhow::anyhow!("chains.{name}: wallet keys: {e}"))?;
            utxo_wallets.insert(name.clone(), wallet);
        }
        Ok(Self {
            evm_account_xpub,
            safe_owner,
            utxo_wallets,
            encrypted_seed,
        })
    }

    /// Decrypts key B's seed (one audited Vault `transit/decrypt`). Keep the result only while
    /// signing; it is zeroized on drop.
    ///
    /// Errors: Vault's ([`keystore::KeystoreError`]: unreachable, sealed, permission denied,
    /// a corrupt record).
    pub async fn decrypt(&self, vault: &Vault) -> Result<Mnemonic, keystore::KeystoreError> {
        keystore::decrypt_seed(vault, HotKey::B, &self.encrypted_seed).await
    }

    /// Decrypts key B once and checks that it derives the stored EVM account xpub; the
    /// plaintext is dropped before returning. Run at start.
    ///
    /// Errors: Vault's, or a seed that derives another xpub.
    pub async fn verify(&self, vault: &Vault) -> anyhow::Result<()> {
        let mnemonic = self.decrypt(vault).await?;
        let xpub = MasterKey::from_seed(&mnemonic.to_seed())?.evm_account_xpub()?;
        drop(mnemonic);
        anyhow::ensure!(
            xpub == self.evm_account_xpub,
            "key b decrypts to another xpub than the one stored"
        );
        Ok(())
    }
}
