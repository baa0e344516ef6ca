//! Publishing with publisher confirms and persistent delivery: a message counts as sent
//! only once the broker has acked it (and, for routing keys that
//! [`requires_consumer`](crate::topology::routing::requires_consumer), routed it to a queue).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use crate::topology::routing;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Exchange name, e.g. [`crate::topology::EVENTS_EXCHANGE`].
    pub exchange: String,
    /// Routing key, e.g. `"deposit.confirmed"`.
    pub routing_key: String,
    /// AMQP `message_id`: the message's idempotency key (the JSON `id`).
    pub message_id: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// Extra headers (string values), e.g. the dead-letter reason.
    pub headers: Vec<(String, String)>,
    /// AMQP `correlation_id`, for replies.
    pub correlation_id: Option<String>,
}

/// Why a publish did not count as sent. Every variant means: keep the message and try again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The connection or channel failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (publisher confirm `nack`).
    #[error("broker nacked message {message_id} ({routing_key})")]
    Nacked {
        /// The refused message's id.
        message_id: String,
        /// Its routing key.
        routing_key: String,
    },
    /// No queue is bound for a routing key whose messages must be consumed.
    #[error("no queue is bound to {exchange} for {routing_key}; is its consumer deployed?")]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key nobody listens to.
        routing_key: String,
    },
}

/// A channel in confirm mode. Cheap to keep for the life of a connection; not shared between
/// tasks.
pub struct ConfirmingPublisher {
    channel: Channel,
}

impl ConfirmingPublisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
    ///
    /// Errors: the broker's.
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// The underlying channel (for declarations).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `messages` in order and waits for every confirm. Returns how many
    /// messages, from the start, were confirmed, and the first error, if any: the caller
    /// marks exactly that prefix as sent and retries the rest.
    ///
    /// All of them are queued before any is waited for: lapin's `basic_publish` queues its
    /// frames and registers its confirm in its first poll, then waits until its I/O thread
    /// has written them. Waiting message by message would cost one hand-over to that thread
    /// per message (about 60 µs); polling each publish once, in order, keeps the broker's
    /// order (and the confirms' delivery tags) equal to `messages`' order and lets the I/O
    /// thread write them in bulk.
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> (usize, Option<PublishError>) {
        let mut queued = Vec::with_capacity(messages.len());
        for message in messages {
            let mandatory = routing::requires_consumer(&message.routing_key);
            let options = BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            };
            let mut publish = Box::pin(self.channel.basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                options,
                &message.body,
                properties(message),
            ));
            // The first poll queues this message behind the previous ones.
            let first_poll = futures::poll!(publish.as_mut());
            queued.push((publish, first_poll));
        }
        let mut pending = Vec::with_capacity(messages.len());
        for (publish, first_poll) in queued {
            let written = match first_poll {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => publish.await,
            };
            match written {
                Ok(confirm) => pending.push(confirm),
                Err(error) => {
                    // Earlier publishes may still be confirmed; count them.
                    let (sent, earlier) = Self::await_confirms(messages, pending).await;
                    return (sent, Some(earlier.unwrap_or(PublishError::Amqp(error))));
                }
            }
        }
        Self::await_confirms(messages, pending).await
    }

    async fn await_confirms(
        messages: &[OutgoingMessage],
        pending: Vec<lapin::PublisherConfirm>,
    ) -> (usize, Option<PublishError>) {
        let mut sent = 0;
        for (message, confirm) in messages.iter().zip(pending) {
            let outcome = match confirm.await {
                Err(error) => Err(PublishError::Amqp(error)),
                Ok(confirmation) if confirmation.is_nack() => Err(PublishError::Nacked {
                    message_id: message.message_id.clone(),
                    routing_key: message.routing_key.clone(),
                }),
                Ok(confirmation) => match confirmation.take_message() {
                    Some(_returned) => Err(PublishError::Unroutable {
                        exchange: message.exchange.clone(),
                        routing_key: message.routing_key.clone(),
                    }),
                    None => Ok(()),
                },
            };
            if let Err(error) = outcome {
                return (sent, Some(error));
            }
            sent += 1;
        }
        (sent, None)
    }

    /// Publishes one message and waits for its confirm.
    ///
    /// Errors: see [`PublishError`].
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        match self.publish_all(std::slice::from_ref(message)).await {
            (_, Some(error)) => Err(error),
            (_, None) => Ok(()),
        }
    }
}

fn properties(message: &OutgoingMessage) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &message.headers {
        headers.insert(
            ShortString::from(name.as_str()),
            AMQPValue::LongString(value.as_str().into()),
        );
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message.message_id.as_str().into())
        .with_headers(headers);
    if let Some(correlation_id) = &message.correlation_id {
        properties = properties.with_correlation_id(correlation_id.as_str().into());
    }
    properties
}
