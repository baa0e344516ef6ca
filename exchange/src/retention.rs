//! Retention of published messages: rows the relay has delivered and nobody reads again are
//! deleted once older than `[retention] keep_published_hours`.
//!
//! Two tables hold them:
//! - `outbox` (withdrawal requests to coinhubd): a row is kept until the broker confirmed it
//!   (`published_at`); afterwards coinhubd dedupes on the withdrawal id, and the withdrawal's
//!   own row (`withdrawals`) stays.
//! - `trading_event_batches` (each settled batch's outcome, the source of its
//!   `exchange.events` messages and of its `orders` and `trades` rows): a row is kept until
//!   every message is confirmed **and** the market's read models have projected it (its
//!   `last_seq` at or behind `trading_projection.projected_seq`). The command log
//!   (`trading_command_batches`) and the ledger are never pruned: books are rebuilt from the
//!   log, and the journal is append-only.
//!
//! Deletion runs in chunks of [`CHUNK_ROWS`], each its own short transaction, so the relay
//! and the projector never wait long on it. At a sustained 100 trades/s the outcome rows are
//! ~2–3 GB a day, so without this the database grows without bound.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::service;

/// Rows deleted per statement (and transaction).
pub const CHUNK_ROWS: i64 = 1_000;
/// Pause between pruning rounds.
pub const ROUND_INTERVAL: Duration = Duration::from_secs(600);

/// Longest age [`prune_published`] compares with (about a century), in seconds.
const MAX_KEEP_SECS: u64 = 100 * 366 * 86_400;

/// Rows deleted by one [`prune_published`] call, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `outbox` rows (published withdrawal requests).
    pub outbox: u64,
    /// `trading_event_batches` rows (published and projected batch outcomes).
    pub trading_event_batches: u64,
}

/// Deletes published `outbox` rows and published, projected `trading_event_batches` rows
/// whose broker confirmation (`published_at`) is older than `keep`, [`CHUNK_ROWS`] at a
/// time, until none is left. Rows still unpublished, or not yet projected, are never
/// touched, whatever their age.
///
/// Errors: the database's; the chunks deleted before it stay deleted (each is complete).
pub async fn prune_published(pool: &PgPool, keep: Duration) -> Result<Pruned, sqlx::Error> {
    // Capped at a century, so the interval arithmetic cannot overflow.
    let keep_secs = i64::try_from(keep.as_secs().min(MAX_KEEP_SECS)).expect("capped");
    let outbox = delete_in_chunks(
        pool,
        "DELETE FROM outbox WHERE seq IN (
             SELECT seq FROM outbox
              WHERE published_at < now() - $1::bigint * interval '1 second'
              ORDER BY published_at LIMIT $2)",
        keep_secs,
    )
    .await?;
    // A batch's row is needed until its messages are confirmed and its orders and trades
    // are projected (a restart projects from these rows).
    let trading_event_batches = delete_in_chunks(
        pool,
        "DELETE FROM trading_event_batches WHERE id IN (
             SELECT b.id FROM trading_event_batches b
               JOIN trading_projection p ON p.market = b.market
              WHERE b.published_at < now() - $1::bigint * interval '1 second'
                AND b.last_seq <= p.projected_seq
              ORDER BY b.published_at LIMIT $2)",
        keep_secs,
    )
    .await?;
    Ok(Pruned {
        outbox,
        trading_event_batches,
    })
}

/// Runs `statement` (binds: the age in seconds, [`CHUNK_ROWS`]) until it deletes fewer than
/// a chunk; returns the rows deleted.
async fn delete_in_chunks(
    pool: &PgPool,
    statement: &'static str,
    keep_secs: i64,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let chunk = sqlx::query(statement)
            .bind(keep_secs)
            .bind(CHUNK_ROWS)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += chunk;
        if chunk < u64::try_from(CHUNK_ROWS).expect("positive") {
            return Ok(deleted);
        }
    }
}

/// Prunes every [`ROUND_INTERVAL`] (the first round at start) until `shutdown` is cancelled,
/// keeping published messages for `keep`; `None` keeps them forever (the task returns at
/// once). Each round's deletions are counted in `metrics`; a failed round is logged and
/// tried again at the next one.
pub async fn run(
    pool: PgPool,
    keep: Option<Duration>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let Some(keep) = keep else {
        tracing::info!("retention.keep_published_hours = 0: published messages are kept forever");
        return;
    };
    loop {
        match prune_published(&pool, keep).await {
            Ok(pruned) if pruned == Pruned::default() => {}
            Ok(pruned) => {
                metrics.record_pruned(pruned);
                tracing::info!(
                    outbox = pruned.outbox,
                    trading_event_batches = pruned.trading_event_batches,
                    "published messages pruned"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "pruning published messages failed; retried later")
            }
        }
        if !service::sleep_or_cancel(ROUND_INTERVAL, &shutdown).await {
            return;
        }
    }
}
