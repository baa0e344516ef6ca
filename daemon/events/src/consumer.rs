//! The consume loop every coinhub consumer uses: handle, then ack only after the handler has
//! committed; dead-letter poison messages with their reason; requeue on transient failure.
//!
//! Idempotency is the handler's job (it must ignore message ids it has already applied):
//! a crash between its commit and the ack redelivers the message.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::publisher::{ConfirmingPublisher, OutgoingMessage, PublishError};
use crate::topology::{DEAD_LETTER_EXCHANGE, headers};

/// What went wrong handling one delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The message can never succeed (malformed, unknown, refused by a rule): it goes to the
    /// dead-letter queue with this reason and the consumer moves on.
    #[error("{0}")]
    Reject(String),
    /// A dependency failed (database, broker): the message is requeued after a pause and
    /// tried again.
    #[error("{0}")]
    Retry(String),
}

/// Handles one delivery. Must be idempotent on the message id.
pub trait Handler: Send + Sync {
    /// Applies `delivery`; returns after the effect is committed.
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Queue to consume.
    pub queue: String,
    /// Consumer tag, for the broker's management views.
    pub consumer_tag: String,
    /// Unacked deliveries the broker may send ahead (AMQP prefetch).
    pub prefetch: u16,
    /// Pause before a [`HandlerError::Retry`] delivery is requeued, so a failing dependency
    /// is not hammered.
    pub retry_delay: Duration,
}

/// Why the consume loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The broker connection or channel failed; reconnect and call [`run`] again.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// A poison message could not be dead-lettered; it was requeued, not lost.
    #[error("dead-lettering failed: {0}")]
    DeadLetter(#[from] PublishError),
    /// The broker cancelled the consumer (e.g. the queue was deleted).
    #[error("consumer on {queue} was cancelled by the broker")]
    Cancelled {
        /// The queue.
        queue: String,
    },
}

/// Consumes `options.queue` on `connection` until the broker ends the stream or fails.
/// Each delivery goes to `handler`; see [`HandlerError`] for what happens on failure.
///
/// Errors: see [`ConsumeError`]. Unacked deliveries go back to the queue when the channel
/// closes, so an error never loses a message.
pub async fn run<H: Handler>(
    connection: &Connection,
    options: &ConsumerOptions,
    handler: &H,
) -> Result<(), ConsumeError> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(options.prefetch, BasicQosOptions::default())
        .await?;
    let dead_letters = ConfirmingPublisher::open(connection).await?;
    let mut deliveries = channel
        .basic_consume(
            options.queue.as_str().into(),
            options.consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        match handler.handle(&delivery).await {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(HandlerError::Reject(reason)) => {
                tracing::warn!(queue = %options.queue, routing_key = %delivery.routing_key,
                    %reason, "dead-lettering message");
                dead_letter(&dead_letters, &options.queue, &delivery, &reason).await?;
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(HandlerError::Retry(reason)) => {
                tracing::warn!(queue = %options.queue, %reason, "handler failed, requeueing");
                tokio::time::sleep(options.retry_delay).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                delivery.nack(requeue).await?;
            }
        }
    }
    close_quietly(&channel).await;
    Err(ConsumeError::Cancelled {
        queue: options.queue.clone(),
    })
}

/// Publishes `delivery` unchanged to [`DEAD_LETTER_EXCHANGE`] under its original routing
/// key, with the reason, the queue and the original exchange as headers.
async fn dead_letter(
    publisher: &ConfirmingPublisher,
    queue: &str,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), PublishError> {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    publisher
        .publish(&OutgoingMessage {
            exchange: DEAD_LETTER_EXCHANGE.to_owned(),
            routing_key: delivery.routing_key.to_string(),
            message_id,
            body: delivery.data.clone(),
            headers: vec![
                (headers::REASON.to_owned(), reason.to_owned()),
                (headers::QUEUE.to_owned(), queue.to_owned()),
                (
                    headers::ORIGINAL_EXCHANGE.to_owned(),
                    delivery.exchange.to_string(),
                ),
            ],
            correlation_id: None,
        })
        .await
}

async fn close_quietly(channel: &Channel) {
    if let Err(error) = channel.close(200, "consumer done".into()).await {
        tracing::debug!(%error, "closing consumer channel");
    }
}
