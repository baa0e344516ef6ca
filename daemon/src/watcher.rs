//! One chain's watcher task: holds the chain's advisory lock (one active watcher per chain
//! across coinhubd replicas), polls the follower, and reports progress and node health.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coinhub_chains::bitcoin::rpc::{Auth, BitcoinRpc, RpcConfig};
use coinhub_chains::bitcoin::source::{ScriptWatchlist, UtxoFlavor, UtxoSource};
use coinhub_chains::evm::{EvmAssets, EvmSource, Watchlist};
use coinhub_chains::follower::{
    self, ChainSource, FollowError, FollowerConfig, PollReport, SourceError,
};
use coinhub_custody::utxo::UtxoNetwork;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::addressing::ChainAddressing;
use crate::config::{ChainConfig, ChainKind, Config};
use crate::custody::AccountKeys;
use crate::metrics::Metrics;
use crate::status::StatusBoard;
use crate::store::{AssetRules, ChainWatchlist, Lookahead, PgChainStore};

/// Longest pause between polls of a failing node.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a watcher shares with the rest of the daemon.
#[derive(Clone)]
pub struct WatcherContext {
    /// The database.
    pub pool: PgPool,
    /// Chain status for the API.
    pub status: StatusBoard,
    /// Metrics.
    pub metrics: Metrics,
    /// Key A's public derivation data.
    pub keys: Arc<AccountKeys>,
    /// Address derivation of every chain, by name (for the UTXO look-ahead).
    pub addressing: Arc<BTreeMap<String, ChainAddressing>>,
}

/// Why a node is not the chain it was configured as.
enum IdentityError {
    /// The node could not be asked; retry.
    Unreachable(SourceError),
    /// The node serves another chain: fatal.
    Mismatch(String),
}

/// Runs the watcher of chain `name` until `cancel` fires.
///
/// Errors (fatal, the daemon stops): the node serves another chain than configured (EVM
/// chain id, UTXO network), or a UTXO chain has no asset. Everything else (node down,
/// database down, a reorg deeper than `reorg_depth_max`) is logged, shown in the status and
/// retried with backoff.
pub async fn run(
    name: String,
    chain: ChainConfig,
    config: Arc<Config>,
    context: WatcherContext,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let rules: BTreeMap<String, AssetRules> = config
        .assets_of(&name)
        .map(|(symbol, asset)| {
            let rules = AssetRules {
                decimals: asset.decimals,
                confirmations_min: asset.confirmations_min,
                deposit_min: asset.deposit_min,
            };
            (symbol, rules)
        })
        .collect();
    let follower_config = FollowerConfig {
        reorg_depth_max: chain.reorg_depth_max,
        blocks_per_poll_max: chain.blocks_per_poll_max,
        start_height: chain.start_height,
    };
    let store = |watchlist| {
        PgChainStore::new(
            context.pool.clone(),
            name.clone(),
            rules.clone(),
            chain.reorg_depth_max,
            watchlist,
        )
    };
    match chain.kind {
        ChainKind::Evm => {
            let mut assets = EvmAssets::default();
            for (symbol, asset) in config.assets_of(&name) {
                match asset.contract {
                    None => assets.native = Some(symbol),
                    Some(contract) => {
                        assets.tokens.insert(contract, symbol);
                    }
                }
            }
            let watchlist = Arc::new(Watchlist::default());
            let source = EvmSource::new(
                &chain.rpc_urls,
                chain.rpc_timeout(),
                assets,
                watchlist.clone(),
            )?;
            let store = store(ChainWatchlist::Evm(watchlist));
            let chain_id = chain
                .chain_id
                .expect("validated: EVM chains have a chain_id");
            let identity = NodeIdentity::Evm {
                source: &source,
                chain_id,
            };
            follow(
                &name,
                &chain,
                &source,
                &store,
                &follower_config,
                &identity,
                &context,
                &cancel,
            )
            .await
        }
        ChainKind::Bitcoin | ChainKind::Dash => {
            let Some((symbol, _)) = config.assets_of(&name).next() else {
                anyhow::bail!(
                    "chains.{name}: a {:?} chain needs its coin in [assets]",
                    chain.kind
                );
            };
            let network = chain
                .network
                .clone()
                .expect("validated: UTXO chains have a network");
            let network: UtxoNetwork = network.parse()?;
            let rpc = utxo_rpc(&name, &chain)?;
            let flavor = if network.is_dash() {
                UtxoFlavor::Dash
            } else {
                UtxoFlavor::Bitcoin
            };
            let watchlist = Arc::new(ScriptWatchlist::default());
            let source = UtxoSource::new(rpc, flavor, symbol, watchlist.clone());
            let (keys, addressing) = (context.keys.clone(), context.addressing.clone());
            let chain_name = name.clone();
            let derive = move |index| {
                let derived = addressing[&chain_name].derive(&keys, index)?;
                derived
                    .script_pubkey
                    .ok_or_else(|| anyhow::anyhow!("UTXO addressing without a script"))
            };
            let lookahead = Lookahead {
                window: chain.address_lookahead,
                derive: Box::new(derive),
            };
            let store = store(ChainWatchlist::Utxo(watchlist)).with_lookahead(lookahead);
            let identity = NodeIdentity::Utxo {
                source: &source,
                network,
            };
            follow(
                &name,
                &chain,
                &source,
                &store,
                &follower_config,
                &identity,
                &context,
                &cancel,
            )
            .await
        }
    }
}

/// What a node must answer to be the configured chain.
enum NodeIdentity<'a> {
    /// `eth_chainId` equals the configured `chain_id`.
    Evm {
        source: &'a EvmSource,
        chain_id: u64,
    },
    /// `getblockchaininfo.chain` is the configured network's.
    Utxo {
        source: &'a UtxoSource,
        network: UtxoNetwork,
    },
}

impl NodeIdentity<'_> {
    async fn check(&self, name: &str) -> Result<(), IdentityError> {
        match self {
            Self::Evm { source, chain_id } => match source.chain_id().await {
                Ok(id) if id == *chain_id => Ok(()),
                Ok(id) => Err(IdentityError::Mismatch(format!(
                    "chains.{name}.chain_id is {chain_id} but the node at rpc_urls serves chain id {id}"
                ))),
                Err(error) => Err(IdentityError::Unreachable(error)),
            },
            Self::Utxo { source, network } => match source.chain_name().await {
                Ok(served) if served == node_chain_name(*network) => Ok(()),
                Ok(served) => Err(IdentityError::Mismatch(format!(
                    "chains.{name}.network is {network} but the node serves chain {served:?}"
                ))),
                Err(error) => Err(IdentityError::Unreachable(error)),
            },
        }
    }
}

/// `getblockchaininfo.chain` of a node on `network`.
fn node_chain_name(network: UtxoNetwork) -> &'static str {
    let name = network.name();
    if name.ends_with("regtest") {
        "regtest"
    } else if name.ends_with("testnet4") {
        "testnet4"
    } else if name.ends_with("testnet") {
        "test"
    } else if name.ends_with("signet") {
        "signet"
    } else {
        "main"
    }
}

/// Checks the node's identity once, then polls the follower until `cancel` fires.
#[allow(clippy::too_many_arguments)]
async fn follow<S: ChainSource>(
    name: &str,
    chain: &ChainConfig,
    source: &S,
    store: &PgChainStore,
    follower_config: &FollowerConfig,
    identity: &NodeIdentity<'_>,
    context: &WatcherContext,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(_lock) = acquire_chain_lock(context, name, chain.poll_interval(), cancel).await else {
        return Ok(()); // cancelled while standing by
    };
    let mut identity_checked = false;
    let mut failures: u32 = 0;
    while !cancel.is_cancelled() {
        if !identity_checked {
            match identity.check(name).await {
                Ok(()) => identity_checked = true,
                Err(IdentityError::Mismatch(reason)) => anyhow::bail!(reason),
                Err(IdentityError::Unreachable(error)) => {
                    failures += 1;
                    report_failure(context, name, &error, true, failures);
                    sleep_or_cancel(backoff(chain.poll_interval(), failures), cancel).await;
                    continue;
                }
            }
        }
        match follower::poll(source, store, follower_config).await {
            Ok(report) => {
                failures = 0;
                record_progress(context, name, &report);
                // Catching up: go again at once; at the tip: wait for the next block.
                let caught_up = report.scanned_height == Some(report.node_height)
                    || report.blocks_connected == 0;
                if caught_up {
                    sleep_or_cancel(chain.poll_interval(), cancel).await;
                }
            }
            Err(error) => {
                failures += 1;
                if matches!(error, FollowError::ReorgTooDeep { .. }) {
                    tracing::error!(chain = %name, %error, "watcher halted: operator action needed");
                }
                let node_down = matches!(error, FollowError::Source(SourceError::Unreachable(_)));
                report_failure(context, name, &error, node_down, failures);
                sleep_or_cancel(backoff(chain.poll_interval(), failures), cancel).await;
            }
        }
    }
    Ok(())
}

fn record_progress(context: &WatcherContext, name: &str, report: &PollReport) {
    let metrics = &context.metrics;
    metrics
        .node_height
        .with_label_values(&[name])
        .set(report.node_height as i64);
    if let Some(height) = report.scanned_height {
        metrics
            .scanned_height
            .with_label_values(&[name])
            .set(height as i64);
    }
    metrics
        .blocks_connected
        .with_label_values(&[name])
        .inc_by(report.blocks_connected);
    metrics
        .transfers_found
        .with_label_values(&[name])
        .inc_by(report.transfers_found);
    metrics
        .unknown_token_transfers
        .with_label_values(&[name])
        .inc_by(report.unknown_token_transfers);
    metrics
        .reorgs
        .with_label_values(&[name])
        .inc_by(report.reorgs.len() as u64);
    context.status.update(name, |status| {
        status.node_height = Some(report.node_height);
        status.scanned_height = report.scanned_height;
        status.lag_blocks = report
            .scanned_height
            .map(|h| report.node_height.saturating_sub(h));
        status.node_reachable = true;
        status.last_error = None;
        status.last_poll_at = Some(time::OffsetDateTime::now_utc());
        status.consecutive_failures = 0;
    });
}

fn report_failure(
    context: &WatcherContext,
    name: &str,
    error: &dyn std::fmt::Display,
    node_down: bool,
    failures: u32,
) {
    tracing::warn!(chain = %name, %error, failures, "watcher poll failed; retrying with backoff");
    context.metrics.poll_errors.with_label_values(&[name]).inc();
    let error = error.to_string();
    context.status.update(name, |status| {
        status.node_reachable = !node_down && status.node_reachable;
        status.last_error = Some(error);
        status.last_poll_at = Some(time::OffsetDateTime::now_utc());
        status.consecutive_failures = failures;
    });
}

/// `base * 2^(failures-1)`, at most [`BACKOFF_MAX`].
fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    base.saturating_mul(factor).min(BACKOFF_MAX)
}

async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Takes the session advisory lock of `chain` on a dedicated connection, standing by while
/// another coinhubd holds it. Returns the connection that holds the lock (dropping it
/// closes it and so releases the lock), or `None` if cancelled first.
async fn acquire_chain_lock(
    context: &WatcherContext,
    chain: &str,
    retry: Duration,
    cancel: &CancellationToken,
) -> Option<sqlx::PgConnection> {
    let mut announced = false;
    while !cancel.is_cancelled() {
        let attempt = async {
            let mut connection = context.pool.acquire().await?;
            let locked: bool = sqlx::query_scalar(
                "SELECT pg_try_advisory_lock(hashtext('coinhub.watcher:' || $1))",
            )
            .bind(chain)
            .fetch_one(&mut *connection)
            .await?;
            Ok::<_, sqlx::Error>(locked.then_some(connection))
        };
        match attempt.await {
            Ok(Some(connection)) => {
                tracing::info!(%chain, "watcher lock acquired; following the chain");
                // Detached: closing it on drop releases the lock, instead of returning a
                // lock-holding session to the pool.
                return Some(connection.detach());
            }
            Ok(None) if !announced => {
                tracing::info!(%chain, "another coinhubd holds this chain's watcher lock; standing by");
                announced = true;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%chain, %error, "cannot take the watcher lock"),
        }
        sleep_or_cancel(retry.max(Duration::from_secs(1)), cancel).await;
    }
    None
}

/// The Bitcoin/Dash Core JSON-RPC client of a UTXO chain, from its `rpc_urls[0]`,
/// credentials and timeout.
///
/// Errors: an unusable URL (names `chains.<name>.rpc_urls`).
pub fn utxo_rpc(name: &str, chain: &ChainConfig) -> anyhow::Result<BitcoinRpc> {
    let auth = match (&chain.rpc_cookie_file, &chain.rpc_user, &chain.rpc_password) {
        (Some(cookie), _, _) => Auth::CookieFile(cookie.clone()),
        (None, Some(user), Some(password)) => Auth::UserPass {
            user: user.clone(),
            password: password.clone(),
        },
        _ => anyhow::bail!("chains.{name}: needs rpc_cookie_file or rpc_user and rpc_password"),
    };
    let mut rpc_config = RpcConfig::new(chain.rpc_urls[0].clone(), auth);
    rpc_config.timeout_ms = chain.rpc_timeout_ms;
    BitcoinRpc::new(rpc_config).map_err(|e| anyhow::anyhow!("chains.{name}.rpc_urls: {e}"))
}
