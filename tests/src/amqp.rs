//! Talking to RabbitMQ the way the processes under test do (same topology and message
//! types, from `coinhub-events`): publishing events straight to `coinhub.events`, reading the
//! dead-letter queue, and asking for addresses with `address.request`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use coinhub_events::topology::{self, COMMANDS_EXCHANGE, DEAD_LETTER_QUEUE, routing};
use coinhub_events::{AddressReply, AddressRequest, MemberId, SCHEMA_VERSION};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// The exchange's deposit queue (`coinhub-exchange`'s consumer).
pub const EXCHANGE_DEPOSITS_QUEUE: &str = "coinhub-exchange.deposits";

/// A message read from the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its original routing key.
    pub routing_key: String,
    /// The `x-coinhub-reason` header.
    pub reason: Option<String>,
    /// Every string header.
    pub headers: HashMap<String, String>,
    /// The body, unchanged.
    pub body: Vec<u8>,
}

/// One connection to the test's vhost.
pub struct Amqp {
    connection: Connection,
}

impl Amqp {
    /// Connects to `url` (retrying for a few seconds while the broker starts).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(connection) => return Ok(Self { connection }),
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, "amqp connect failed, retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error).with_context(|| format!("connecting to {url}")),
            }
        }
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Declares coinhub's exchanges and the dead-letter queue (idempotent), so tests can
    /// publish before the processes under test have started.
    pub async fn declare_topology(&self) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        topology::declare_exchanges(&channel).await?;
        close(channel).await;
        Ok(())
    }

    /// `(messages ready, consumers)` of `queue`, or `None` if it does not exist.
    pub async fn queue_counts(&self, queue: &str) -> anyhow::Result<Option<(u32, u32)>> {
        // A passive declare of a missing queue closes the channel (404): use a fresh one.
        let channel = self.connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(declared) => {
                close(channel).await;
                Ok(Some((declared.message_count(), declared.consumer_count())))
            }
            Err(error)
                if error.to_string().contains("NOT_FOUND") || error.to_string().contains("404") =>
            {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Publishes `body` to `exchange` with `routing_key` as `mandatory` with a publisher
    /// confirm, and publishes again every 200 ms while no queue is bound for it (the
    /// consumer has not declared its queue yet), until `timeout`.
    pub async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let deadline = Instant::now() + timeout;
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        loop {
            let confirmation = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    mandatory,
                    body,
                    properties.clone(),
                )
                .await?
                .await?;
            anyhow::ensure!(
                !confirmation.is_nack(),
                "broker nacked the message to {exchange}/{routing_key}"
            );
            if confirmation.take_message().is_none() {
                close(channel).await;
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no queue bound to {exchange} for {routing_key} within {timeout:?}; is its consumer running?"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Publishes a JSON event to `coinhub.events` as coinhubd would (persistent, JSON,
    /// `message_id` = `id`), once routed.
    pub async fn publish_event(
        &self,
        routing_key: &str,
        message_id: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message_id.into());
        self.publish_routed(
            topology::EVENTS_EXCHANGE,
            routing_key,
            body,
            properties,
            Duration::from_secs(60),
        )
        .await
    }

    /// Takes every message now in `coinhub.dead-letter` off the queue.
    pub async fn take_dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let channel = self.connection.create_channel().await?;
        let mut letters = Vec::new();
        while let Some(message) = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            let delivery = message.delivery;
            let mut headers = HashMap::new();
            if let Some(table) = delivery.properties.headers() {
                for (name, value) in table.inner() {
                    let text = match value {
                        AMQPValue::LongString(text) => {
                            String::from_utf8_lossy(text.as_bytes()).into_owned()
                        }
                        AMQPValue::ShortString(text) => text.to_string(),
                        other => format!("{other:?}"),
                    };
                    headers.insert(name.to_string(), text);
                }
            }
            letters.push(DeadLetter {
                routing_key: delivery.routing_key.to_string(),
                reason: headers.get(topology::headers::REASON).cloned(),
                headers,
                body: delivery.data,
            });
        }
        close(channel).await;
        Ok(letters)
    }

    /// Sends one `address.request` per `(member, chain)` back to back (without waiting for
    /// a reply in between), then collects the replies by correlation id, in request order.
    pub async fn request_addresses(
        &self,
        requests: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Vec<AddressReply>> {
        let channel = self.connection.create_channel().await?;
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let reply_queue = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await?;
        let reply_queue = reply_queue.name().to_string();
        let consume = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let mut replies = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "e2e-address-replies".into(),
                consume,
                FieldTable::default(),
            )
            .await?;

        let mut ids = Vec::with_capacity(requests.len());
        let mut bodies = Vec::with_capacity(requests.len());
        for (member, chain) in requests {
            let member: MemberId = member.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let request = AddressRequest {
                version: SCHEMA_VERSION,
                id: uuid::Uuid::new_v4(),
                member,
                chain: (*chain).to_owned(),
            };
            ids.push(request.id);
            bodies.push(serde_json::to_vec(&request)?);
        }
        // Make sure coinhubd's command queue is bound before the burst, so every request
        // of the burst is routed and they really race.
        self.wait_routable(COMMANDS_EXCHANGE, routing::ADDRESS_REQUEST, timeout)
            .await?;
        let publishing = self.connection.create_channel().await?;
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut confirms = Vec::new();
        for (id, body) in ids.iter().zip(&bodies) {
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(id.to_string().as_str().into())
                .with_correlation_id(id.to_string().as_str().into())
                .with_reply_to(reply_queue.as_str().into());
            confirms.push(
                publishing
                    .basic_publish(
                        COMMANDS_EXCHANGE.into(),
                        routing::ADDRESS_REQUEST.into(),
                        mandatory,
                        body,
                        properties,
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            let confirmation = confirm.await?;
            anyhow::ensure!(!confirmation.is_nack(), "broker nacked an address.request");
            anyhow::ensure!(
                confirmation.take_message().is_none(),
                "an address.request was not routed"
            );
        }
        close(publishing).await;

        let mut by_id: HashMap<uuid::Uuid, AddressReply> = HashMap::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while by_id.len() < ids.len() {
            let delivery = tokio::time::timeout_at(deadline, replies.next())
                .await
                .with_context(|| {
                    format!(
                        "{} of {} address replies within {timeout:?}",
                        by_id.len(),
                        ids.len()
                    )
                })?
                .context("reply consumer ended")??;
            let reply = AddressReply::parse(&delivery.data).with_context(|| {
                format!("bad reply: {}", String::from_utf8_lossy(&delivery.data))
            })?;
            let correlation = delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string());
            anyhow::ensure!(
                correlation.as_deref() == Some(reply.request_id.to_string().as_str()),
                "reply correlation_id {correlation:?} does not match its request_id {}",
                reply.request_id
            );
            anyhow::ensure!(
                ids.contains(&reply.request_id),
                "reply to an unknown request {}",
                reply.request_id
            );
            by_id.insert(reply.request_id, reply);
        }
        close(channel).await;
        ids.iter()
            .map(|id| by_id.remove(id).context("missing reply"))
            .collect()
    }

    /// Waits until the well-known queue that consumes `routing_key` on `exchange` has a
    /// consumer (a probe message would be delivered to it, so none is sent).
    async fn wait_routable(
        &self,
        exchange: &str,
        routing_key: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let queue = match (exchange, routing_key) {
            (COMMANDS_EXCHANGE, routing::ADDRESS_REQUEST) => topology::ADDRESS_REQUEST_QUEUE,
            (_, routing::DEPOSIT_CONFIRMED | routing::DEPOSIT_ORPHANED) => EXCHANGE_DEPOSITS_QUEUE,
            _ => anyhow::bail!("no known queue for {exchange}/{routing_key}"),
        };
        self.wait_consumer(queue, timeout).await
    }

    /// Waits until `queue` exists and has at least one consumer.
    pub async fn wait_consumer(&self, queue: &str, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("queue {queue} has a consumer");
        crate::wait::wait_until(&what, timeout, Duration::from_millis(200), || async {
            Ok(self
                .queue_counts(queue)
                .await?
                .filter(|(_, consumers)| *consumers > 0)
                .map(|_| ()))
        })
        .await
    }
}

async fn close(channel: Channel) {
    if let Err(error) = channel.close(200, "done".into()).await {
        tracing::debug!(%error, "closing channel");
    }
}
