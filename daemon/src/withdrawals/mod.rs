//! Withdrawals (DESIGN.md, "Withdrawals"): `requested → signed → broadcast → confirmed |
//! failed`.
//!
//! - [`intake`] validates each `withdrawal.request` and stores it (idempotent on its id);
//!   an invalid one fails at once with its reason.
//! - The payout engine of each chain ([`utxo`] for Bitcoin and Dash, [`evm`] for the Safe)
//!   takes the `requested` withdrawals, builds one transaction, signs it with key A, gets key
//!   B's signature from the cosigner, and stores the fully signed transaction (`signed`)
//!   before it broadcasts it (`broadcast`); it then follows it to the asset's
//!   `confirmations_min` (`confirmed`), replacing it with a higher fee when it is stuck.
//!   After a crash the stored transaction is re-broadcast, never rebuilt.
//! - [`store`] holds the table and writes every `withdrawal.*` event with its state change.

pub mod evm;
pub mod faults;
pub mod intake;
pub mod payouts;
pub mod store;
pub mod utxo;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::addressing::ChainAddressing;
use crate::config::{ChainKind, Config};
use crate::cosigner::client::CosignerClient;

/// The cosigner's refusals that may only mean it lags behind coinhubd: a request its own
/// queue has not delivered yet, an input its own node has not seen confirmed yet. The
/// engines retry these in a later round instead of failing the withdrawal.
pub const TRANSIENT_REFUSALS: [&str; 2] = ["unknown_request", "unknown_input"];

/// A payout engine's task.
pub type EngineTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The payout engine of every configured chain, as `(chain name, task)`.
///
/// Errors: a chain whose node client cannot be built, a chain without its coin in
/// `[assets]`, a bad `[cosigner] url`.
pub fn engines(
    config: &Arc<Config>,
    pool: &PgPool,
    addressing: &BTreeMap<String, ChainAddressing>,
    metrics: &crate::metrics::Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<(String, EngineTask)>> {
    let cosigner = match &config.cosigner {
        Some(link) => Some(CosignerClient::new(
            &link.url,
            link.hmac_secret.clone(),
            Duration::from_millis(link.timeout_ms),
        )?),
        None => None,
    };
    let mut tasks: Vec<(String, EngineTask)> = Vec::new();
    for (name, chain) in &config.chains {
        match (chain.kind, addressing.get(name)) {
            (ChainKind::Bitcoin | ChainKind::Dash, Some(ChainAddressing::Utxo(wallet))) => {
                let Some((symbol, asset)) = config
                    .assets_of(name)
                    .find(|(_, asset)| asset.contract.is_none())
                else {
                    anyhow::bail!("chains.{name}: its coin is not in [assets]");
                };
                let engine = utxo::UtxoEngine::new(
                    name.clone(),
                    symbol,
                    asset.confirmations_min,
                    (**wallet).clone(),
                    crate::watcher::utxo_rpc(name, chain)?,
                    chain.withdrawals.clone(),
                    config.clone(),
                    pool.clone(),
                    config.vault.clone(),
                    cosigner.clone(),
                    metrics.clone(),
                );
                tasks.push((name.clone(), Box::pin(engine.run(cancel.clone()))));
            }
            (ChainKind::Evm, _) => {
                let Some(safe) = chain.withdrawals.safe_address else {
                    tracing::warn!(chain = %name, "no withdrawals.safe_address: withdrawals on this chain are validated but not paid");
                    continue;
                };
                let assets = config
                    .assets_of(name)
                    .map(|(symbol, asset)| {
                        let rules = evm::EvmAsset {
                            contract: asset.contract,
                            confirmations_min: asset.confirmations_min,
                        };
                        (symbol, rules)
                    })
                    .collect::<BTreeMap<_, _>>();
                let Some(native) = config
                    .assets_of(name)
                    .find(|(_, asset)| asset.contract.is_none())
                    .map(|(symbol, _)| symbol)
                else {
                    anyhow::bail!("chains.{name}: its native coin is not in [assets]");
                };
                let engine = Arc::new(evm::EvmEngine {
                    chain: name.clone(),
                    chain_id: chain.chain_id.unwrap_or_default(),
                    native,
                    assets,
                    safe,
                    provider: evm::EvmEngine::provider(&chain.rpc_urls[0])?,
                    settings: chain.withdrawals.clone(),
                    pool: pool.clone(),
                    vault: config.vault.clone(),
                    cosigner: cosigner.clone(),
                    metrics: metrics.clone(),
                });
                tasks.push((name.clone(), Box::pin(engine.run(cancel.clone()))));
            }
            _ => {}
        }
    }
    Ok(tasks)
}
