//! `coinhubd cosigner`: the process that holds key B (DESIGN.md, "Trust model") and signs a
//! spend only when its own checks, made from the transaction's own bytes, pass.
//!
//! It runs with its own configuration ([`config`]), its own database, and its own Vault
//! token, which can decrypt key B and nothing else (`deploy/openbao/cosigner.hcl`). It keeps
//! its own copy of the withdrawal requests ([`requests`]: its own queue bound to
//! `withdrawal.request`), decides ([`verify`]: every UTXO input unspent with the claimed
//! amount on its own node (`gettxout`), outputs = known unpaid requests + change to our own
//! wallet, fee cap, per-withdrawal and 24 h limits, deny/allow lists), and answers
//! coinhubd over HMAC-authenticated HTTP ([`auth`], [`server`]; coinhubd's side is
//! [`client`]). See `docs/cosigner.md`.

pub mod auth;
pub mod client;
pub mod config;
pub mod keys;
pub mod requests;
pub mod server;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use coinhub_custody::keystore::HotKey;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::config::CosignerConfig;
use self::keys::CosignerKeys;
use self::verify::Cosigner;
use crate::db;

/// How often old nonces are pruned.
const NONCE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// `coinhubd cosigner init`: creates key B in the cosigner's database, encrypted with the
/// cosigner's transit key ([`crate::custody::init_key`]), and returns its public keys.
///
/// Errors: key B exists already; Vault's; the database's.
pub async fn init(config: &CosignerConfig) -> anyhow::Result<crate::custody::CreatedKey> {
    let pool = db::connect_and_migrate(&config.database).await?;
    let created = crate::custody::init_key(&pool, &config.vault, HotKey::B).await;
    pool.close().await;
    created
}

/// Runs the cosigner until SIGINT/SIGTERM (clean exit) or until a task fails (error).
///
/// At start: migrates its database, loads key B's public data (`custody_keys`, key `b`) and
/// builds the wallets, checks that Vault decrypts key B (logged, not fatal: signing answers
/// 503 until it can), then serves the request consumer and the HTTP API.
///
/// Errors: PostgreSQL unreachable or a failed migration, no key B, wallets the configured
/// xpubs do not form, the listen address in use, or a failed task.
pub async fn run(config: CosignerConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let pool = db::connect_and_migrate(&config.database).await?;
    let keys = Arc::new(CosignerKeys::load(&pool, &config).await?);
    let vault = config.vault.client()?;
    match keys.verify(&vault).await {
        Ok(()) => {
            tracing::info!(safe_owner = %keys.safe_owner, "custody key b verified with vault")
        }
        Err(error) => {
            tracing::error!(%error, "custody key b cannot be decrypted; signing is unavailable")
        }
    }
    let cosigner = Arc::new(Cosigner::new(pool.clone(), config.clone(), keys, vault)?);

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on [api] listen = {}: {e}", config.api.listen)
        })?;
    tracing::info!(listen = %config.api.listen, "cosigner api listening");

    let (failure_tx, mut failure_rx) = tokio::sync::mpsc::channel::<String>(4);
    let router = server::router(cosigner);
    let api_cancel = cancel.clone();
    let api_stop = cancel.clone();
    let api_failure = failure_tx.clone();
    tracker.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { api_stop.cancelled().await })
            .await;
        if let Err(error) = served {
            let _ = api_failure.send(format!("cosigner api: {error}")).await;
        }
        api_cancel.cancel();
    });

    let consumer_cancel = cancel.clone();
    let consumer_failure = failure_tx.clone();
    let consumer = requests::serve(
        pool.clone(),
        config.clone(),
        config.amqp.url.clone(),
        cancel.clone(),
    );
    tracker.spawn(async move {
        if let Err(panic) = tokio::spawn(consumer).await {
            tracing::error!(%panic, "cosigner request consumer panicked; stopping");
            let _ = consumer_failure
                .send(format!("request consumer panicked: {panic}"))
                .await;
            consumer_cancel.cancel();
        }
    });

    let prune_pool = pool.clone();
    let prune_cancel = cancel.clone();
    let skew = config.api.max_clock_skew_secs;
    tracker.spawn(async move {
        loop {
            match auth::prune_nonces(&prune_pool, skew).await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(deleted, "old nonces pruned"),
                Err(error) => tracing::warn!(%error, "pruning nonces failed"),
            }
            tokio::select! {
                _ = prune_cancel.cancelled() => return,
                _ = tokio::time::sleep(NONCE_PRUNE_INTERVAL) => {}
            }
        }
    });
    tracker.close();
    drop(failure_tx);

    tokio::select! {
        _ = crate::daemon::shutdown_signal() => tracing::info!("shutdown requested"),
        _ = cancel.cancelled() => {}
    }
    cancel.cancel();
    tracker.wait().await;
    pool.close().await;
    match failure_rx.try_recv() {
        Ok(failure) => Err(anyhow::anyhow!(failure)),
        Err(_) => Ok(()),
    }
}
