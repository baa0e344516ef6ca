//! One chain's watcher task: holds the chain's advisory lock (one active watcher per chain
//! across coinhubd replicas), polls the follower, and reports progress and node health.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use coinhub_chains::evm::{EvmAssets, EvmSource, Watchlist};
use coinhub_chains::follower::{self, FollowError, FollowerConfig, SourceError};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ChainConfig, Config};
use crate::metrics::Metrics;
use crate::status::StatusBoard;
use crate::store::{AssetRules, PgChainStore};

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
}

/// Runs the watcher of EVM chain `name` until `cancel` fires.
///
/// Errors (fatal, the daemon stops): the node reports another chain id than configured.
/// Everything else (node down, database down, a reorg deeper than `reorg_depth_max`) is
/// logged, shown in the status and retried with backoff.
pub async fn run_evm(
    name: String,
    chain: ChainConfig,
    config: Arc<Config>,
    context: WatcherContext,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut assets = EvmAssets::default();
    let mut rules = BTreeMap::new();
    let mut tokens = HashMap::new();
    for (symbol, asset) in config.assets_of(&name) {
        match asset.contract {
            None => assets.native = Some(symbol.clone()),
            Some(contract) => {
                tokens.insert(contract, symbol.clone());
            }
        }
        rules.insert(
            symbol,
            AssetRules {
                decimals: asset.decimals,
                confirmations_min: asset.confirmations_min,
                deposit_min: asset.deposit_min,
            },
        );
    }
    assets.tokens = tokens;
    let watchlist = Arc::new(Watchlist::default());
    let source = EvmSource::new(
        &chain.rpc_urls,
        chain.rpc_timeout(),
        assets,
        watchlist.clone(),
    )?;
    let store = PgChainStore::new(
        context.pool.clone(),
        name.clone(),
        rules,
        chain.reorg_depth_max,
        watchlist,
    );
    let follower_config = FollowerConfig {
        reorg_depth_max: chain.reorg_depth_max,
        blocks_per_poll_max: chain.blocks_per_poll_max,
        start_height: chain.start_height,
    };

    let Some(_lock) = acquire_chain_lock(&context, &name, chain.poll_interval(), &cancel).await
    else {
        return Ok(()); // cancelled while standing by
    };
    let mut chain_id_checked = false;
    let mut failures: u32 = 0;
    while !cancel.is_cancelled() {
        if !chain_id_checked {
            match source.chain_id().await {
                Ok(id) if id == chain.chain_id => chain_id_checked = true,
                Ok(id) => anyhow::bail!(
                    "chains.{name}.chain_id is {} but the node at rpc_urls serves chain id {id}",
                    chain.chain_id
                ),
                Err(error) => {
                    failures += 1;
                    report_failure(
                        &context,
                        &name,
                        &error,
                        matches!(error, SourceError::Unreachable(_)),
                        failures,
                    );
                    sleep_or_cancel(backoff(chain.poll_interval(), failures), &cancel).await;
                    continue;
                }
            }
        }
        let outcome = follower::poll(&source, &store, &follower_config).await;
        match outcome {
            Ok(report) => {
                failures = 0;
                let metrics = &context.metrics;
                metrics
                    .node_height
                    .with_label_values(&[&name])
                    .set(report.node_height as i64);
                if let Some(height) = report.scanned_height {
                    metrics
                        .scanned_height
                        .with_label_values(&[&name])
                        .set(height as i64);
                }
                metrics
                    .blocks_connected
                    .with_label_values(&[&name])
                    .inc_by(report.blocks_connected);
                metrics
                    .transfers_found
                    .with_label_values(&[&name])
                    .inc_by(report.transfers_found);
                metrics
                    .unknown_token_transfers
                    .with_label_values(&[&name])
                    .inc_by(report.unknown_token_transfers);
                metrics
                    .reorgs
                    .with_label_values(&[&name])
                    .inc_by(report.reorgs.len() as u64);
                context.status.update(&name, |status| {
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
                // Catching up: go again at once; at the tip: wait for the next block.
                let caught_up = report.scanned_height == Some(report.node_height)
                    || report.blocks_connected == 0;
                if caught_up {
                    sleep_or_cancel(chain.poll_interval(), &cancel).await;
                }
            }
            Err(error) => {
                failures += 1;
                if matches!(error, FollowError::ReorgTooDeep { .. }) {
                    tracing::error!(chain = %name, %error, "watcher halted: operator action needed");
                }
                let node_down = matches!(error, FollowError::Source(SourceError::Unreachable(_)));
                report_failure(&context, &name, &error, node_down, failures);
                sleep_or_cancel(backoff(chain.poll_interval(), failures), &cancel).await;
            }
        }
    }
    Ok(())
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
