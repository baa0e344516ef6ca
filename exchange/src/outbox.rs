//! The exchange's transactional outbox: commands to coinhubd (today `withdrawal.request`)
//! are written in the same database transaction as the ledger change they announce
//! ([`enqueue`]) and relayed to RabbitMQ in `seq` order ([`run_relay`]) with publisher
//! confirms, persistent delivery and AMQP `mandatory`, through
//! [`ConfirmingPublisher::publish_all`].
//!
//! A message the broker returns as unroutable (coinhubd has not declared its queue yet) or
//! nacks stays in the outbox and is retried, in order, after a pause; it is never dropped. A
//! crash between the broker's confirm and the `published_at` update publishes the same
//! message id again, which coinhubd ignores (it is idempotent on the withdrawal id).
//!
//! The same relay publishes the trading engine's `exchange.events` messages, which are stored
//! one row per settled batch ([`crate::trading::events`]).

use std::time::Duration;

use coinhub_events::outbox::{self, OutboxError};
use coinhub_events::publisher::{ConfirmingPublisher, PublishError};
use coinhub_events::topology;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::service::{self, Backoff, ConsumerSettings, SessionError};

/// Most messages published per relay round (one database transaction).
const BATCH_MAX: i64 = 100;
/// Pause when the outbox is empty.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Longest wait for the broker's confirms of one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

pub use coinhub_events::outbox::enqueue;

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A batch failed (database, broker refusal, confirm timeout): see [`OutboxError`].
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Connecting or declaring failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl From<lapin::Error> for RelayError {
    fn from(error: lapin::Error) -> Self {
        Self::Session(SessionError::Amqp(error))
    }
}

/// Publishes one batch of the outbox (see [`coinhub_events::outbox::publish_batch`]); returns
/// how many rows were published.
///
/// Errors: [`RelayError`]; the confirmed prefix is marked published even then.
pub async fn publish_batch(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
) -> Result<usize, RelayError> {
    let sent = outbox::publish_batch(pool, publisher, BATCH_MAX, CONFIRM_TIMEOUT).await?;
    if sent > 0 {
        tracing::info!(published = sent, "outbox messages published");
    }
    Ok(sent)
}

/// Publishes the next batch of trading events (see
/// [`crate::trading::events::publish_next_batch`]); returns how many messages were published.
///
/// Errors: [`RelayError`]; the confirmed messages are recorded even then.
pub async fn publish_trading_events(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
) -> Result<usize, RelayError> {
    let sent = crate::trading::events::publish_next_batch(pool, publisher, CONFIRM_TIMEOUT).await?;
    if sent > 0 {
        tracing::debug!(published = sent, "exchange.events messages published");
    }
    Ok(sent)
}

/// Relays the outbox until `shutdown` is cancelled: connects (with `settings`' timeout),
/// declares the exchanges, publishes in order, and pauses with backoff (from
/// `settings.retry_delay` up to `settings.reconnect_delay_max`) after each failure. An
/// unroutable or nacked message keeps the connection and is retried; a broken connection is
/// reopened.
pub async fn run_relay(pool: PgPool, settings: ConsumerSettings, shutdown: CancellationToken) {
    let mut reconnects = Backoff::new(settings.retry_delay, settings.reconnect_delay_max);
    while !shutdown.is_cancelled() {
        match relay_session(&pool, &settings, &shutdown).await {
            Ok(()) => break,
            Err(error) => {
                let delay = reconnects.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis(),
                    "outbox relay lost the broker; reconnecting");
                if !service::sleep_or_cancel(delay, &shutdown).await {
                    break;
                }
            }
        }
    }
    tracing::info!("outbox relay stopped");
}

/// One connection: publish until the connection fails (error) or shutdown (`Ok`).
async fn relay_session(
    pool: &PgPool,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
) -> Result<(), RelayError> {
    let connection = tokio::select! {
        connection = service::connect(settings) => connection?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let publisher = ConfirmingPublisher::open(&connection).await?;
    topology::declare_exchanges(publisher.channel()).await?;
    crate::trading::declare_exchange(publisher.channel()).await?;
    tracing::info!("outbox relay connected");
    let mut retries = Backoff::new(settings.retry_delay, settings.reconnect_delay_max);
    let outcome = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        // Both are tried every round: a withdrawal request the broker keeps refusing must
        // not hold up the trading events, nor the reverse.
        let commands = publish_batch(pool, &publisher).await;
        let events = publish_trading_events(pool, &publisher).await;
        let round = match (commands, events) {
            (Ok(commands), Ok(events)) => Ok(commands + events),
            (Err(error), _) | (_, Err(error)) => Err(error),
        };
        let pause = match round {
            Ok(0) => IDLE_POLL,
            Ok(_) => {
                retries.reset();
                continue;
            }
            Err(RelayError::Outbox(OutboxError::Publish(
                error @ (PublishError::Unroutable { .. } | PublishError::Nacked { .. }),
            ))) => {
                let delay = retries.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis(),
                    "outbox message not taken by the broker; kept for a retry");
                delay
            }
            Err(RelayError::Outbox(OutboxError::Database(error))) => {
                let delay = retries.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis(),
                    "outbox relay cannot read the database");
                delay
            }
            // A bug, not the broker: keep the connection (the other messages still go out)
            // and say so loudly; the batch and its market's later ones wait, in order.
            Err(RelayError::Outbox(OutboxError::Malformed(reason))) => {
                let delay = retries.next_delay();
                tracing::error!(%reason, retry_in_ms = delay.as_millis(),
                    "a stored exchange.events batch does not decode; it and its market's \
                     later batches are held back");
                delay
            }
            Err(error) => break Err(error),
        };
        if !service::sleep_or_cancel(pause, shutdown).await {
            break Ok(());
        }
    };
    if let Err(error) = connection.close(200, "outbox relay stopping".into()).await {
        tracing::debug!(%error, "closing relay connection");
    }
    outcome
}

/// How many outbox rows wait to be published.
///
/// Errors: the database's.
pub async fn unpublished(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
}
