//! The reconnect loop every AMQP command consumer of coinhubd (and of its cosigner) shares:
//! connect, declare what the consumer needs and build its handler, consume until the
//! connection fails, pause, start again — until shutdown.

use std::time::Duration;

use coinhub_events::consumer::{self, ConsumerOptions, Handler};
use futures::future::BoxFuture;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// Pause before reconnecting to RabbitMQ after a failed session.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Consumes `options.queue` until `cancel` fires. Each session opens a new connection to
/// `amqp_url` and calls `setup` with it, which declares exchanges and queues and returns the
/// handler; a failure anywhere (broker down, channel closed) is logged and the session starts
/// again after [`RECONNECT_DELAY`]. Deliveries are acknowledged by `consumer::run` only after
/// the handler's own commit.
pub async fn serve<H, F>(
    amqp_url: SecretString,
    options: ConsumerOptions,
    cancel: CancellationToken,
    setup: F,
) where
    H: Handler,
    F: for<'c> Fn(&'c Connection) -> BoxFuture<'c, anyhow::Result<H>>,
{
    while !cancel.is_cancelled() {
        let session = async {
            let connection =
                Connection::connect(amqp_url.expose_secret(), ConnectionProperties::default())
                    .await?;
            let handler = setup(&connection).await?;
            tracing::info!(queue = %options.queue, "consuming");
            let outcome = consumer::run(&connection, &options, &handler).await;
            let _ = connection.close(200, "stopping".into()).await;
            outcome.map_err(anyhow::Error::from)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = session => {
                if let Err(error) = outcome {
                    tracing::warn!(queue = %options.queue, error = format!("{error:#}"), "consumer interrupted; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}
