//! The consumers as long-running services: connect to RabbitMQ, declare the topology, run
//! [`coinhub_events::consumer::run`] with the [`DepositHandler`] (queue
//! [`DEPOSITS_QUEUE`]) or the [`SettlementHandler`] (queue [`WITHDRAWALS_QUEUE`]), and
//! reconnect with exponential backoff when the broker goes away. Database outages make the
//! handler return `Retry`; consecutive retries back off the same way. Nothing transient ends
//! the service; only the shutdown token does.
//!
//! Graceful shutdown: once the token is cancelled no new delivery is started, the one in
//! flight finishes its transaction, and the connection is closed. A message committed but
//! not yet acked at that moment is redelivered later and recognised as already applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use coinhub_events::consumer::{self, ConsumerOptions, Handler, HandlerError};
use coinhub_events::topology::{self, EVENTS_EXCHANGE};
use lapin::message::Delivery;
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpConfig;
use crate::db;
use crate::deposits::{self, DEPOSITS_QUEUE, DepositHandler};
use crate::withdrawals::{self, SettlementHandler, WITHDRAWALS_QUEUE};

/// Shortest pause between reconnect attempts.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(500);
/// A connection that lived this long resets the reconnect backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// Longest wait for the in-flight delivery at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How the consumer talks to the broker (from [`AmqpConfig`]).
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Broker URL (secret: holds a password).
    pub amqp_url: SecretString,
    /// AMQP prefetch.
    pub prefetch: u16,
    /// First pause before requeueing a delivery that failed transiently; doubles per
    /// consecutive failure up to `reconnect_delay_max`.
    pub retry_delay: Duration,
    /// Longest pause between reconnects or retries.
    pub reconnect_delay_max: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Consumer tag, visible in RabbitMQ's management views.
    pub consumer_tag: String,
}

impl From<&AmqpConfig> for ConsumerSettings {
    fn from(config: &AmqpConfig) -> Self {
        Self {
            amqp_url: config.url.clone(),
            prefetch: config.prefetch,
            retry_delay: Duration::from_millis(config.retry_delay_ms),
            reconnect_delay_max: Duration::from_millis(config.reconnect_delay_max_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            consumer_tag: "coinhub-exchange".to_owned(),
        }
    }
}

/// Why one broker session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The connection attempt took longer than `connect_timeout`.
    #[error("connecting to the broker timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The broker refused or dropped the connection, or a declaration failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The consume loop stopped.
    #[error(transparent)]
    Consume(#[from] consumer::ConsumeError),
}

/// Opens a connection to `settings.amqp_url` within `settings.connect_timeout`.
///
/// Errors: [`SessionError::ConnectTimeout`], [`SessionError::Amqp`].
pub async fn connect(settings: &ConsumerSettings) -> Result<Connection, SessionError> {
    let properties =
        ConnectionProperties::default().with_connection_name("coinhub-exchange".into());
    tokio::time::timeout(
        settings.connect_timeout,
        Connection::connect(settings.amqp_url.expose_secret(), properties),
    )
    .await
    .map_err(|_| SessionError::ConnectTimeout(settings.connect_timeout))?
    .map_err(SessionError::Amqp)
}

/// Declares the exchanges, the dead-letter queue, [`DEPOSITS_QUEUE`] bound to
/// `coinhub.events` for [`deposits::ROUTING_KEYS`] and [`WITHDRAWALS_QUEUE`] for
/// [`withdrawals::ROUTING_KEYS`]. Idempotent.
///
/// Errors: the broker's.
pub async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    topology::declare_exchanges(channel).await?;
    topology::declare_queue(
        channel,
        DEPOSITS_QUEUE,
        EVENTS_EXCHANGE,
        &deposits::ROUTING_KEYS,
    )
    .await?;
    topology::declare_queue(
        channel,
        WITHDRAWALS_QUEUE,
        EVENTS_EXCHANGE,
        &withdrawals::ROUTING_KEYS,
    )
    .await
}

/// Migrates the database, retrying with backoff while PostgreSQL is unreachable. Returns
/// false if `shutdown` was cancelled first.
pub async fn migrate_with_retry(
    pool: &PgPool,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(RECONNECT_DELAY_MIN, settings.reconnect_delay_max);
    loop {
        match db::migrate(pool).await {
            Ok(()) => return true,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis(), "migrating the database failed");
                if !sleep_or_cancel(delay, shutdown).await {
                    return false;
                }
            }
        }
    }
}

/// Consumes [`DEPOSITS_QUEUE`] with a [`DepositHandler`] on `pool` (already migrated) until
/// `shutdown` is cancelled, reconnecting with backoff whenever the broker is unavailable.
pub async fn run_deposit_consumer(
    pool: PgPool,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) {
    run_consumer(DepositHandler::new(pool), settings, shutdown).await;
}

/// Consumes [`WITHDRAWALS_QUEUE`] with a [`SettlementHandler`] on `pool` (already migrated)
/// until `shutdown` is cancelled, reconnecting with backoff like [`run_deposit_consumer`].
pub async fn run_withdrawal_consumer(
    pool: PgPool,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) {
    run_queue_consumer(
        WITHDRAWALS_QUEUE,
        SettlementHandler::new(pool),
        settings,
        shutdown,
    )
    .await;
}

/// [`run_deposit_consumer`] with any handler of [`DEPOSITS_QUEUE`] (tests wrap the
/// [`DepositHandler`] to inject faults).
pub async fn run_consumer<H: Handler>(
    handler: H,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) {
    run_queue_consumer(DEPOSITS_QUEUE, handler, settings, shutdown).await;
}

/// Consumes `queue` (declared by [`declare_topology`]) with `handler` until `shutdown` is
/// cancelled, reconnecting with backoff whenever the broker is unavailable.
pub async fn run_queue_consumer<H: Handler>(
    queue: &'static str,
    handler: H,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) {
    let guarded = Guarded {
        inner: handler,
        busy: Arc::new(Mutex::new(())),
        shutdown: shutdown.clone(),
        retries: AtomicU32::new(0),
        retry_delay: settings.retry_delay,
        retry_delay_max: settings.reconnect_delay_max,
    };
    let mut backoff = Backoff::new(RECONNECT_DELAY_MIN, settings.reconnect_delay_max);
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        match session(queue, &guarded, &settings, &shutdown).await {
            Ok(()) => break,
            Err(error) => {
                if started.elapsed() >= HEALTHY_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis(),
                    "broker session ended; reconnecting");
                if !sleep_or_cancel(delay, &shutdown).await {
                    break;
                }
            }
        }
    }
    tracing::info!(queue, "consumer stopped");
}

/// One connection: declare, consume until the broker fails (error) or shutdown (`Ok`).
async fn session<H: Handler>(
    queue: &'static str,
    handler: &Guarded<H>,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let connection = tokio::select! {
        connection = connect(settings) => connection?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let declarations = connection.create_channel().await?;
    declare_topology(&declarations).await?;
    declarations.close(200, "declared".into()).await?;
    tracing::info!(queue, "consuming");
    let options = ConsumerOptions {
        queue: queue.to_owned(),
        consumer_tag: settings.consumer_tag.clone(),
        prefetch: settings.prefetch,
        retry_delay: Duration::ZERO,
    };
    let consume = consumer::run(&connection, &options, handler);
    tokio::pin!(consume);
    let outcome = tokio::select! {
        result = &mut consume => result.map_err(SessionError::from),
        () = shutdown.cancelled() => {
            // New deliveries now wait forever in `Guarded::handle`; keep driving the loop
            // until the one in flight has committed (it holds `busy`).
            let busy = Arc::clone(&handler.busy);
            let drained = async move { drop(busy.lock().await) };
            tokio::select! {
                result = &mut consume => result.map_err(SessionError::from),
                () = drained => Ok(()),
                () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                    tracing::warn!("in-flight delivery did not finish within the grace period");
                    Ok(())
                }
            }
        }
    };
    if let Err(error) = connection
        .close(200, "coinhub-exchange stopping".into())
        .await
    {
        tracing::debug!(%error, "closing broker connection");
    }
    outcome
}

/// Wraps a handler: no new delivery after shutdown, one delivery at a time marked busy,
/// growing pauses on consecutive transient failures.
struct Guarded<H> {
    inner: H,
    busy: Arc<Mutex<()>>,
    shutdown: CancellationToken,
    retries: AtomicU32,
    retry_delay: Duration,
    retry_delay_max: Duration,
}

impl<H: Handler> Handler for Guarded<H> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if self.shutdown.is_cancelled() {
            return std::future::pending().await;
        }
        let _busy = self.busy.lock().await;
        if self.shutdown.is_cancelled() {
            return std::future::pending().await;
        }
        let result = self.inner.handle(delivery).await;
        if let Err(HandlerError::Retry(reason)) = &result {
            let failures = self
                .retries
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            let delay = Backoff::delay_for(self.retry_delay, self.retry_delay_max, failures - 1);
            tracing::error!(%reason, failures, retry_in_ms = delay.as_millis(),
                "transient failure (database down?); requeueing after a pause");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => {}
            }
        } else {
            self.retries.store(0, Ordering::Relaxed);
        }
        result
    }
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = Self::delay_for(self.min, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// `min * 2^attempt`, capped at `max`.
    fn delay_for(min: Duration, max: Duration, attempt: u32) -> Duration {
        min.saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(max)
    }
}

/// Sleeps `delay`; false if `shutdown` was cancelled first.
pub(crate) async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(500));
        assert_eq!(
            Backoff::delay_for(Duration::from_secs(1), Duration::from_secs(30), u32::MAX),
            Duration::from_secs(30)
        );
    }
}
