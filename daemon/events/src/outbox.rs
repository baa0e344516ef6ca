//! One relay round of a transactional outbox (feature `outbox`): coinhubd and
//! coinhub-exchange each keep an `outbox` table of the same shape (`seq`, `id`, `exchange`,
//! `routing_key`, `payload` JSONB, `published_at`, `attempts`, `last_error`) and publish it
//! with [`publish_batch`]; [`enqueue`] adds a row inside the caller's transaction.

use std::time::Duration;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::publisher::{ConfirmingPublisher, OutgoingMessage, PublishError};

/// Adds `message` (serialized to JSON) to the `outbox` table on `conn`, which should be inside
/// the caller's transaction: it is published only if that transaction commits. `id` becomes
/// the AMQP `message_id` (it must be the JSON `id`).
///
/// Errors: the database's (e.g. a duplicate `id`), or `message` failing to serialize
/// (`sqlx::Error::Encode`).
pub async fn enqueue<T: Serialize>(
    conn: &mut PgConnection,
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
        .execute(conn)
        .await?;
    Ok(())
}

/// Why a relay round stopped.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// PostgreSQL failed; nothing was marked published.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The broker did not take a message (unroutable, nacked, connection lost); it and the
    /// ones after it stay in the outbox, the confirmed ones before it are marked published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The broker did not confirm the batch within the timeout; nothing was marked published.
    #[error("broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    /// A stored row does not decode (a bug, not input); it stays unpublished, with this
    /// error recorded on it.
    #[error("stored messages do not decode: {0}")]
    Malformed(String),
}

/// Publishes up to `batch_max` unpublished rows, in `seq` order, in one database transaction
/// that holds their row locks (`FOR UPDATE SKIP LOCKED`, so two relays never publish the same
/// row), with publisher confirms (waiting at most `confirm_timeout`). The confirmed prefix is
/// marked published; the first row that failed gets `attempts + 1` and `last_error`, and it
/// and the rows after it wait for the next round, so messages never overtake each other.
/// Returns how many rows were published.
///
/// # Errors
/// [`OutboxError`]; the confirmed prefix is marked published even then.
pub async fn publish_batch(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
    batch_max: i64,
    confirm_timeout: Duration,
) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, Uuid, String, String, String)> = sqlx::query_as(
        "SELECT seq, id, exchange, routing_key, payload::text FROM outbox
          WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch_max)
    .fetch_all(&mut *tx)
    .await?;
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
    let (sent, error) = tokio::time::timeout(confirm_timeout, publisher.publish_all(&messages))
        .await
        .map_err(|_| OutboxError::ConfirmTimeout(confirm_timeout))?;
    let sent = sent.min(rows.len());
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
    match error {
        Some(error) => Err(error.into()),
        None => Ok(sent),
    }
}
