//! The `address.request` command consumer (`coinhub.commands`, queue
//! `coinhubd.address.request`): replies to `reply_to` with the member's deposit address and
//! the request's `correlation_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coinhub_events::consumer::{ConsumerOptions, Handler, HandlerError};
use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage};
use coinhub_events::topology::{self, ADDRESS_REQUEST_QUEUE, COMMANDS_EXCHANGE, routing};
use coinhub_events::{AddressReply, AddressRequest, SCHEMA_VERSION};
use lapin::message::Delivery;
use secrecy::SecretString;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::addresses::{self, AddressError};
use crate::addressing::ChainAddressing;
use crate::custody::AccountKeys;
use crate::metrics::Metrics;

/// What the address handler needs.
#[derive(Clone)]
pub struct AddressService {
    /// The database.
    pub pool: PgPool,
    /// Key A's public derivation data.
    pub keys: Arc<AccountKeys>,
    /// Address derivation of every configured chain, by name.
    pub chains: Arc<BTreeMap<String, ChainAddressing>>,
    /// Metrics.
    pub metrics: Metrics,
}

impl AddressService {
    /// Hands out (or returns the existing) address of `member` on `chain`.
    ///
    /// Errors: see [`AddressError`].
    pub async fn deposit_address(
        &self,
        chain: &str,
        member: &coinhub_events::MemberId,
    ) -> Result<addresses::DepositAddress, AddressError> {
        let address =
            addresses::deposit_address(&self.pool, &self.keys, &self.chains, chain, member).await?;
        if address.newly_issued {
            self.metrics
                .addresses_issued
                .with_label_values(&[chain])
                .inc();
        }
        Ok(address)
    }
}

struct AddressHandler {
    service: AddressService,
    replies: ConfirmingPublisher,
}

impl Handler for AddressHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if delivery.routing_key.as_str() != routing::ADDRESS_REQUEST {
            return Err(HandlerError::Reject(format!(
                "unknown routing key {:?}",
                delivery.routing_key.as_str()
            )));
        }
        let request = AddressRequest::parse(&delivery.data)
            .map_err(|e| HandlerError::Reject(e.to_string()))?;
        let Some(reply_to) = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|q| q.to_string())
        else {
            return Err(HandlerError::Reject(
                "address.request without reply_to".to_owned(),
            ));
        };
        let correlation_id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_else(|| request.id.to_string());
        let (address, error) = match self
            .service
            .deposit_address(&request.chain, &request.member)
            .await
        {
            Ok(issued) => (Some(issued.address), None),
            Err(error) if error.is_client_error() => (None, Some(error.to_string())),
            Err(error) => return Err(HandlerError::Retry(error.to_string())),
        };
        let reply = AddressReply {
            version: SCHEMA_VERSION,
            id: Uuid::new_v4(),
            request_id: request.id,
            occurred_at: OffsetDateTime::now_utc(),
            member: request.member,
            chain: request.chain,
            address,
            error,
        };
        let body = serde_json::to_vec(&reply).map_err(|e| HandlerError::Retry(e.to_string()))?;
        self.replies
            .publish(&OutgoingMessage {
                exchange: String::new(), // the default exchange routes to the queue named reply_to
                routing_key: reply_to,
                message_id: reply.id.to_string(),
                body,
                headers: Vec::new(),
                correlation_id: Some(correlation_id),
            })
            .await
            .map_err(|e| HandlerError::Retry(e.to_string()))
    }
}

/// Serves `address.request` until `cancel` fires, reconnecting to RabbitMQ when needed.
pub async fn serve(service: AddressService, amqp_url: SecretString, cancel: CancellationToken) {
    let options = ConsumerOptions {
        queue: ADDRESS_REQUEST_QUEUE.to_owned(),
        consumer_tag: "coinhubd.address".to_owned(),
        prefetch: 16,
        retry_delay: Duration::from_secs(1),
    };
    crate::consumers::serve(amqp_url, options, cancel, |connection| {
        let service = service.clone();
        Box::pin(async move {
            let replies = ConfirmingPublisher::open(connection).await?;
            topology::declare_exchanges(replies.channel()).await?;
            topology::declare_queue(
                replies.channel(),
                ADDRESS_REQUEST_QUEUE,
                COMMANDS_EXCHANGE,
                &[routing::ADDRESS_REQUEST],
            )
            .await?;
            Ok(AddressHandler { service, replies })
        })
    })
    .await;
}
