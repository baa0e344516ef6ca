//! `coinhubd run`: starts every task and stops them together.
//!
//! Tasks are critical (reth's `spawn_critical_task`): if one returns an error or panics, the
//! others are cancelled and the process exits non-zero, instead of running half-alive.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::commands::{self, AddressService};
use crate::config::Config;
use crate::custody::AccountKeys;
use crate::metrics::Metrics;
use crate::status::StatusBoard;
use crate::watcher::{self, WatcherContext};
use crate::{addressing, db, outbox};

/// Runs coinhubd until SIGINT/SIGTERM (clean exit) or until a critical task fails (error).
///
/// Errors: PostgreSQL unreachable or migration failure at start, no custody key (run
/// `coinhubd init`), the admin listener's address in use, or a failed critical task.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let pool = db::connect_and_migrate(&config.database).await?;
    let keys = Arc::new(AccountKeys::load(&pool).await?);
    let chains = Arc::new(addressing::for_config(&config, &keys)?);
    custody_self_check(&config, &pool).await;

    let metrics = Metrics::new();
    let status = StatusBoard::default();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (failure_tx, mut failure_rx) = tokio::sync::mpsc::channel::<String>(8);
    let spawn_critical =
        |name: String, task: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>| {
            let failure_tx = failure_tx.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
            let outcome = tokio::spawn(task).await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("{name}: {error:#}")),
                Err(join_error) => Some(format!("{name} panicked: {join_error}")),
            };
            if let Some(failure) = failure {
                tracing::error!(task = %name, %failure, "critical task failed; stopping coinhubd");
                let _ = failure_tx.send(failure).await;
                cancel.cancel();
            }
        });
        };

    for (name, chain) in &config.chains {
        let context = WatcherContext {
            pool: pool.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            keys: keys.clone(),
            addressing: chains.clone(),
        };
        status.update(name, |_| {});
        spawn_critical(
            format!("watcher:{name}"),
            Box::pin(watcher::run(
                name.clone(),
                chain.clone(),
                config.clone(),
                context,
                cancel.clone(),
            )),
        );
    }
    let relay = outbox::relay(
        pool.clone(),
        config.amqp.url.clone(),
        metrics.clone(),
        cancel.clone(),
    );
    spawn_critical(
        "outbox-relay".to_owned(),
        Box::pin(async move {
            relay.await;
            Ok(())
        }),
    );

    let addresses = AddressService {
        pool: pool.clone(),
        keys,
        chains,
        metrics: metrics.clone(),
    };
    let serve_commands =
        commands::serve(addresses.clone(), config.amqp.url.clone(), cancel.clone());
    spawn_critical(
        "address-commands".to_owned(),
        Box::pin(async move {
            serve_commands.await;
            Ok(())
        }),
    );

    for (name, engine) in
        crate::withdrawals::engines(&config, &pool, &addresses.chains, &metrics, &cancel)?
    {
        spawn_critical(
            format!("payouts:{name}"),
            Box::pin(async move {
                engine.await;
                Ok(())
            }),
        );
    }
    let serve_withdrawals = crate::withdrawals::intake::serve(
        pool.clone(),
        config.clone(),
        config.amqp.url.clone(),
        cancel.clone(),
    );
    spawn_critical(
        "withdrawal-requests".to_owned(),
        Box::pin(async move {
            serve_withdrawals.await;
            Ok(())
        }),
    );

    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on [admin] listen = {}: {e}",
                config.admin.listen
            )
        })?;
    tracing::info!(listen = %config.admin.listen, "admin api listening");
    let router = api::router(ApiState {
        pool: pool.clone(),
        addresses,
        status,
        metrics,
        token: config.admin.token.clone(),
    });
    let api_cancel = cancel.clone();
    spawn_critical(
        "admin-api".to_owned(),
        Box::pin(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { api_cancel.cancelled().await })
                .await
                .map_err(anyhow::Error::from)
        }),
    );
    tracker.close();
    drop(failure_tx);

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown requested"),
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

/// Decrypts key A once to prove that Vault is reachable and the stored ciphertext matches the
/// stored xpub; deposits do not need the key, so a failure is logged, not fatal.
async fn custody_self_check(config: &Config, pool: &sqlx::PgPool) {
    match crate::custody::verify_key_a(pool, &config.vault).await {
        Ok(()) => tracing::info!("custody key a verified with vault"),
        Err(error) => {
            tracing::error!(%error, "custody key a cannot be decrypted; signing is unavailable")
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the graceful-shutdown trigger of coinhubd and of
/// the cosigner.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
