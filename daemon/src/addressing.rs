//! How each configured chain turns a derivation index into a deposit address.
//!
//! - EVM: key A's BIP44 `m/44'/60'/0'/0/i` (an EOA; deposits are collected later).
//! - Bitcoin: the wallet's own `wsh(sortedmulti(2,A/0/*,B/0/*,C/0/*))` address at `i`.
//! - Dash: `sh(sortedmulti(2,A/0/*,B/0/*,C/0/*))` with Dash's version bytes.
//!
//! Everything is derived from account xpubs; no secret is touched.

use std::collections::BTreeMap;

use coinhub_custody::utxo::{Branch, MultisigScript, UtxoNetwork, UtxoWallet};

use crate::config::{ChainKind, Config};
use crate::custody::AccountKeys;

/// A derived deposit address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The address text (EIP-55 for EVM; Base58Check or bech32 for UTXO chains).
    pub address: String,
    /// The scriptPubKey it pays to (UTXO chains; `None` for EVM).
    pub script_pubkey: Option<Vec<u8>>,
}

/// One chain's address derivation.
pub enum ChainAddressing {
    /// EVM: from key A's account xpub.
    Evm,
    /// Bitcoin or Dash: the 2-of-3 multisig wallet over A, B and C.
    Utxo(Box<UtxoWallet>),
}

impl ChainAddressing {
    /// The address at `index` of the receive branch.
    ///
    /// Errors: an index of 2^31 or more, or a derivation failure.
    pub fn derive(&self, keys: &AccountKeys, index: u32) -> anyhow::Result<Derived> {
        match self {
            Self::Evm => Ok(Derived {
                address: keys.evm_deposit_address(index)?,
                script_pubkey: None,
            }),
            Self::Utxo(wallet) => {
                let derived = wallet.derive(Branch::Receive, index)?;
                Ok(Derived {
                    address: derived.address,
                    script_pubkey: Some(derived.script_pubkey.to_bytes()),
                })
            }
        }
    }
}

/// The addressing of every configured chain, by chain name.
///
/// Errors: a UTXO chain whose `cosigner_xpub` or `backup_xpub` does not parse, or does not
/// fit its network (names the key); key A without a BIP48 xpub for the network.
pub fn for_config(
    config: &Config,
    keys: &AccountKeys,
) -> anyhow::Result<BTreeMap<String, ChainAddressing>> {
    let mut chains = BTreeMap::new();
    for (name, chain) in &config.chains {
        let addressing = match chain.kind {
            ChainKind::Evm => ChainAddressing::Evm,
            ChainKind::Bitcoin | ChainKind::Dash => {
                let network: UtxoNetwork = chain
                    .network
                    .as_deref()
                    .expect("validated: UTXO chains have a network")
                    .parse()?;
                let parse = |field: &str, value: &Option<String>| {
                    value
                        .as_deref()
                        .expect("validated: UTXO chains have cosigner and backup xpubs")
                        .parse()
                        .map_err(|e| anyhow::anyhow!("chains.{name}.{field}: {e}"))
                };
                let cosigner = parse("cosigner_xpub", &chain.cosigner_xpub)?;
                let backup = parse("backup_xpub", &chain.backup_xpub)?;
                let script = match chain.kind {
                    ChainKind::Dash => MultisigScript::Sh,
                    _ => MultisigScript::Wsh,
                };
                let keys = [keys.utxo_account_xpub(network)?, cosigner, backup];
                let wallet = UtxoWallet::new(network, script, keys)
                    .map_err(|e| anyhow::anyhow!("chains.{name}: wallet keys: {e}"))?;
                ChainAddressing::Utxo(Box::new(wallet))
            }
        };
        chains.insert(name.clone(), addressing);
    }
    Ok(chains)
}
