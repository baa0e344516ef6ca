//! Transactional outbox: events are written in the same database transaction as the state
//! change they report ([`enqueue`]) and relayed to RabbitMQ in order ([`relay`]) with
//! publisher confirms and persistent delivery. A crash between publish and the `published_at`
//! update republishes the same message id, which consumers ignore.

use std::time::Duration;

use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage, PublishError};
use coinhub_events::topology;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Most messages published per relay round (one database transaction).
const BATCH_MAX: i64 = 200;
/// Pause when the outbox is empty.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Pause after a failure (broker down, nobody bound for a required routing key).
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Adds an event to the outbox inside `tx`; it is published only if `tx` commits.
///
/// Errors: the database's (e.g. a duplicate `id`).
pub async fn enqueue<T: Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    exchange: &str,
    routing_key: &str,
    id: Uuid,
    message: &T,
) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_value(message).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query("INSERT INTO outbox (id, exchange, routing_key, payload) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(exchange)
        .bind(routing_key)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

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

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

async fn publish_until_failure(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<(), RelayError> {
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

/// Publishes up to [`BATCH_MAX`] unpublished rows in one transaction that holds their row
/// locks (`FOR UPDATE SKIP LOCKED`), so two relays never publish the same row at once.
/// Returns how many were published.
async fn publish_batch(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
    metrics: &Metrics,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, Uuid, String, String, String)> = sqlx::query_as(
        "SELECT seq, id, exchange, routing_key, payload::text FROM outbox
         WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH_MAX)
    .fetch_all(&mut *tx)
    .await?;
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&mut *tx)
        .await?;
    metrics.outbox_backlog.set(backlog);
    if rows.is_empty() {
        return Ok(0);
    }
    let messages: Vec<OutgoingMessage> = rows
        .iter()
        .map(|(_, id, exchange, routing_key, payload)| OutgoingMessage {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            message_id: id.to_string(),
            body: payload.clone().into_bytes(),
            headers: Vec::new(),
            correlation_id: None,
        })
        .collect();
    let (sent, error) = publisher.publish_all(&messages).await;
    let sent_seqs: Vec<i64> = rows[..sent].iter().map(|row| row.0).collect();
    sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
        .bind(&sent_seqs)
        .execute(&mut *tx)
        .await?;
    if let (Some(error), Some(failed)) = (&error, rows.get(sent)) {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE seq = $1")
            .bind(failed.0)
            .bind(error.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    metrics.outbox_published.inc_by(sent as u64);
    match error {
        Some(error) => Err(error.into()),
        None => Ok(sent),
    }
}
