//! Transactional outbox: events are written in the same database transaction as the state
//! change they report ([`enqueue`]) and relayed to RabbitMQ in order ([`relay`]) with
//! publisher confirms and persistent delivery. A crash between publish and the `published_at`
//! update republishes the same message id, which consumers ignore.

use std::time::Duration;

use coinhub_events::outbox::{self, OutboxError};
use coinhub_events::publisher::ConfirmingPublisher;
use coinhub_events::topology;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Most messages published per relay round (one database transaction).
const BATCH_MAX: i64 = 200;
/// Pause when the outbox is empty.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Longest wait for the broker's confirms of one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failure (broker down, nobody bound for a required routing key).
const RETRY_DELAY: Duration = Duration::from_secs(2);

pub use coinhub_events::outbox::enqueue;

/// Publishes the outbox until `cancel` fires, reconnecting to RabbitMQ with a pause whenever
/// it fails. Events leave strictly in `seq` order: a message that cannot be published (e.g.
/// `deposit.confirmed` with no queue bound) holds back the ones after it, so a consumer never
/// sees `deposit.orphaned` before the `deposit.confirmed` it reverses.
pub async fn relay(
    pool: PgPool,
    amqp_url: SecretString,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        match connect(&amqp_url).await {
            Ok((connection, publisher)) => {
                tracing::info!("outbox relay connected to RabbitMQ");
                if let Err(error) =
                    publish_until_failure(&pool, &publisher, &metrics, &cancel).await
                {
                    tracing::warn!(%error, "outbox relay interrupted");
                }
                let _ = connection.close(200, "relay stopping".into()).await;
            }
            Err(error) => tracing::warn!(%error, "outbox relay cannot reach RabbitMQ ([amqp] url)"),
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
}

async fn connect(url: &SecretString) -> Result<(Connection, ConfirmingPublisher), lapin::Error> {
    let connection =
        Connection::connect(url.expose_secret(), ConnectionProperties::default()).await?;
    let publisher = ConfirmingPublisher::open(&connection).await?;
    topology::declare_exchanges(publisher.channel()).await?;
    Ok((connection, publisher))
}

async fn publish_until_failure(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<(), OutboxError> {
    while !cancel.is_cancelled() {
        let published = publish_batch(pool, publisher, metrics).await?;
        if published == 0 {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
    Ok(())
}

/// Reports the backlog, then publishes one batch (see
/// [`coinhub_events::outbox::publish_batch`]); returns how many rows were published.
async fn publish_batch(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
    metrics: &Metrics,
) -> Result<usize, OutboxError> {
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await?;
    metrics.outbox_backlog.set(backlog);
    let sent = outbox::publish_batch(pool, publisher, BATCH_MAX, CONFIRM_TIMEOUT).await?;
    metrics.outbox_published.inc_by(sent as u64);
    Ok(sent)
}
