//! The cosigner's own copy of every `withdrawal.request`: a durable queue
//! [`COSIGNER_WITHDRAWAL_REQUEST_QUEUE`] bound to [`routing::WITHDRAWAL_REQUEST`] on
//! [`topology::COMMANDS_EXCHANGE`], so the cosigner learns what the exchange asked for without
//! trusting coinhubd. Each request is stored in `cosigner_requests`, idempotent on its id,
//! and acknowledged only after the commit (`coinhub_events::consumer::run`).
//!
//! A request the cosigner cannot use — unknown asset, decimals that disagree, an amount that
//! is not a positive integer of base units, a destination that is not an address of the
//! asset's chain — is stored with its `invalid_reason` and is never signable; it is not
//! dead-lettered. Only a body that is not a `withdrawal.request` at all is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use coinhub_chains::destination;
use coinhub_events::WithdrawalRequest;
use coinhub_events::consumer::{ConsumerOptions, Handler, HandlerError};
use coinhub_events::topology::{self, COSIGNER_WITHDRAWAL_REQUEST_QUEUE, routing};
use lapin::message::Delivery;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::config::CosignerConfig;

/// A request as the cosigner stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// Upper-cased asset symbol.
    pub asset: String,
    /// The asset's chain; `None` for an unknown asset.
    pub chain: Option<String>,
    /// Canonical destination text (as received when invalid).
    pub destination: String,
    /// Amount in base units; `None` when invalid.
    pub amount: Option<u128>,
    /// Why the request can never be signed; `None` when valid.
    pub invalid_reason: Option<String>,
}

/// Checks `request` against the cosigner's own configuration: a configured asset whose
/// decimals agree, a positive integer amount of base units that fits in 128 bits, and a
/// destination of the asset's chain and network (stored in canonical spelling).
pub fn validate(config: &CosignerConfig, request: &WithdrawalRequest) -> StoredRequest {
    let invalid = |asset: String, chain: Option<String>, amount, reason: String| StoredRequest {
        asset,
        chain,
        destination: request.destination.clone(),
        amount,
        invalid_reason: Some(reason),
    };
    let Some((symbol, asset)) = config.asset(&request.asset) else {
        let reason = format!("asset: unknown asset {:?}", request.asset);
        return invalid(request.asset.to_uppercase(), None, None, reason);
    };
    let chain = Some(asset.chain.clone());
    if request.decimals != asset.decimals {
        let reason = format!(
            "decimals: the request says {} but {symbol} has {}",
            request.decimals, asset.decimals
        );
        return invalid(symbol, chain, None, reason);
    }
    let amount =
        match destination::validate_amount(&request.amount, alloy::primitives::U256::from(1u8)) {
            Ok(amount) => amount,
            Err(error) => return invalid(symbol, chain, None, format!("amount: {error}")),
        };
    let Ok(amount) = u128::try_from(amount) else {
        let reason = format!("amount: {amount} does not fit in 128 bits");
        return invalid(symbol, chain, None, reason);
    };
    let parsed = config
        .destination_network(&asset.chain)
        .and_then(|network| {
            Ok(destination::parse_destination(
                network,
                &request.destination,
            )?)
        });
    match parsed {
        Ok(parsed) => StoredRequest {
            asset: symbol,
            chain,
            destination: parsed.canonical_text(),
            amount: Some(amount),
            invalid_reason: None,
        },
        Err(error) => invalid(symbol, chain, Some(amount), format!("destination: {error}")),
    }
}

/// Stores `request` (validated by [`validate`]) unless its id is already stored. Returns
/// whether it was new.
///
/// # Errors
/// The database's.
pub async fn store(
    pool: &PgPool,
    config: &CosignerConfig,
    request: &WithdrawalRequest,
) -> Result<bool, sqlx::Error> {
    let stored = validate(config, request);
    let inserted = sqlx::query(
        "INSERT INTO cosigner_requests (request_id, member_id, asset, chain, destination,
             amount_text, amount, decimals, invalid_reason, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::NUMERIC, $8, $9, $10)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(request.id)
    .bind(request.member.as_str())
    .bind(&stored.asset)
    .bind(&stored.chain)
    .bind(&stored.destination)
    .bind(&request.amount)
    .bind(stored.amount.map(|amount| amount.to_string()))
    .bind(i16::from(request.decimals))
    .bind(&stored.invalid_reason)
    .bind(request.occurred_at)
    .execute(pool)
    .await?;
    let new = inserted.rows_affected() == 1;
    if new {
        match &stored.invalid_reason {
            None => tracing::info!(request_id = %request.id, asset = %stored.asset,
                "withdrawal request recorded"),
            Some(reason) => tracing::warn!(request_id = %request.id, %reason,
                "withdrawal request recorded as invalid; it will never be signed"),
        }
    }
    Ok(new)
}

struct RequestHandler {
    pool: PgPool,
    config: Arc<CosignerConfig>,
}

impl Handler for RequestHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if delivery.routing_key.as_str() != routing::WITHDRAWAL_REQUEST {
            return Err(HandlerError::Reject(format!(
                "unknown routing key {:?}",
                delivery.routing_key.as_str()
            )));
        }
        let request = WithdrawalRequest::parse(&delivery.data)
            .map_err(|e| HandlerError::Reject(e.to_string()))?;
        store(&self.pool, &self.config, &request)
            .await
            .map_err(|e| HandlerError::Retry(format!("storing request {}: {e}", request.id)))?;
        Ok(())
    }
}

/// Declares the exchanges, the cosigner's queue and coinhubd's (coinhubd's intake uses this
/// too) (both bound to
/// `withdrawal.request` on `coinhub.commands`, see
/// [`topology::declare_withdrawal_request_queues`]). Idempotent.
///
/// # Errors
/// The broker's.
pub async fn declare(channel: &lapin::Channel) -> Result<(), lapin::Error> {
    topology::declare_exchanges(channel).await?;
    topology::declare_withdrawal_request_queues(channel).await
}

/// Consumes the cosigner's request queue until `cancel` fires, reconnecting to RabbitMQ after
/// a failure (see [`crate::consumers::serve`]).
pub async fn serve(
    pool: PgPool,
    config: Arc<CosignerConfig>,
    amqp_url: SecretString,
    cancel: CancellationToken,
) {
    let options = ConsumerOptions {
        queue: COSIGNER_WITHDRAWAL_REQUEST_QUEUE.to_owned(),
        consumer_tag: "coinhub-cosigner.withdrawal".to_owned(),
        prefetch: 32,
        retry_delay: Duration::from_secs(1),
    };
    crate::consumers::serve(amqp_url, options, cancel, |connection| {
        let handler = RequestHandler {
            pool: pool.clone(),
            config: config.clone(),
        };
        Box::pin(async move {
            let channel = connection.create_channel().await?;
            declare(&channel).await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(handler)
        })
    })
    .await;
}
