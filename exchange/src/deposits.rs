//! Crediting deposits: the handler of queue [`DEPOSITS_QUEUE`] (`deposit.confirmed`,
//! `deposit.orphaned` from `coinhub.events`).
//!
//! Exactly once per message id and per deposit: each message's id is recorded in
//! `processed_messages` in the same transaction as its effect, and a deposit's credit
//! transfer is unique on (`deposit`, deposit id). A redelivered message, or another event for
//! an already-credited deposit, commits nothing new and is acked.
//!
//! - `deposit.confirmed`: debit the platform's `hot_wallet` and credit the member's
//!   `available` by the event's amount; record the asset's decimals. A confirmation older than
//!   an orphan of the same deposit already applied is stale and credits nothing.
//! - `deposit.orphaned`: recorded in `deposit_orphans`; if the deposit was credited, also in
//!   `credit_reversal_alerts` and logged at error level. Nothing is debited automatically.
//!
//! Malformed messages are refused ([`HandlerError::Reject`], dead-lettered); database
//! failures are retried ([`HandlerError::Retry`]).

use coinhub_events::consumer::{Handler, HandlerError};
use coinhub_events::topology::routing;
use coinhub_events::{DepositEvent, DepositEventKind, MessageError};
use lapin::message::Delivery;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use crate::journal::{self, JournalError, Posted};
use crate::ledger::{AssetSymbol, LedgerError, Transfer};
use coinhub_events::numeric;

/// The exchange's durable queue of deposit events, bound to `coinhub.events`.
pub const DEPOSITS_QUEUE: &str = "coinhub-exchange.deposits";

/// The routing keys [`DEPOSITS_QUEUE`] is bound to.
pub const ROUTING_KEYS: [&str; 2] = [routing::DEPOSIT_CONFIRMED, routing::DEPOSIT_ORPHANED];

/// What applying one event did. Stored in `processed_messages.outcome` (see
/// [`Outcome::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The deposit was credited by transfer `transfer_id`.
    Credited {
        /// The credit transfer.
        transfer_id: Uuid,
    },
    /// The message id was applied before; nothing changed (nothing was committed).
    DuplicateMessage,
    /// Another event had already credited this deposit; only the message id was recorded.
    DepositAlreadyCredited {
        /// The earlier credit transfer.
        transfer_id: Uuid,
    },
    /// A confirmed deposit of zero base units; recorded, nothing to credit.
    ZeroAmount,
    /// The confirmation is older than an orphan event already applied for the deposit; it
    /// credits nothing (a later re-confirmation will).
    SupersededByOrphan,
    /// An orphan of a deposit that was never credited; recorded.
    OrphanRecorded,
    /// An orphan of a credited deposit; alert `alert_id` awaits an operator.
    ReversalAlert {
        /// Row id in `credit_reversal_alerts`.
        alert_id: i64,
    },
}

impl Outcome {
    /// The value stored in `processed_messages.outcome` (none for a duplicate, which stores
    /// nothing).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credited { .. } => "credited",
            Self::DuplicateMessage => "duplicate_message",
            Self::DepositAlreadyCredited { .. } => "deposit_already_credited",
            Self::ZeroAmount => "zero_amount",
            Self::SupersededByOrphan => "superseded_by_orphan",
            Self::OrphanRecorded => "orphan_recorded",
            Self::ReversalAlert { .. } => "reversal_alert",
        }
    }
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepositError {
    /// The message is not a deposit event this consumer accepts.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The event breaks a ledger rule (bad asset symbol, decimals differ from the recorded
    /// ones, ...). It will never apply.
    #[error("ledger refused event: {0}")]
    Refused(String),
    /// PostgreSQL failed; nothing was committed.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
}

impl DepositError {
    /// Refusals become [`HandlerError::Reject`] (dead-letter), database failures
    /// [`HandlerError::Retry`] (requeue).
    pub fn into_handler_error(self) -> HandlerError {
        match self {
            Self::Database(_) => HandlerError::Retry(self.to_string()),
            Self::Message(_) | Self::Refused(_) => HandlerError::Reject(self.to_string()),
        }
    }
}

impl From<sqlx::Error> for DepositError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl From<JournalError> for DepositError {
    fn from(error: JournalError) -> Self {
        match error {
            JournalError::Database(error) => Self::Database(error),
            refused => Self::Refused(refused.to_string()),
        }
    }
}

impl From<LedgerError> for DepositError {
    fn from(error: LedgerError) -> Self {
        Self::Refused(error.to_string())
    }
}

/// Parses a delivery on [`DEPOSITS_QUEUE`].
///
/// Errors: [`MessageError::UnknownRoutingKey`] for a routing key not in [`ROUTING_KEYS`];
/// otherwise those of [`DepositEvent::parse`] (malformed, wrong version, routing key
/// mismatch).
pub fn parse_delivery(routing_key: &str, body: &[u8]) -> Result<DepositEvent, MessageError> {
    if !ROUTING_KEYS.contains(&routing_key) {
        return Err(MessageError::UnknownRoutingKey(routing_key.to_owned()));
    }
    DepositEvent::parse(body, routing_key)
}

/// Applies `event` in one transaction: its effect and its message id commit together.
///
/// Errors: [`DepositError`]; on error nothing is committed.
pub async fn apply(pool: &PgPool, event: &DepositEvent) -> Result<Outcome, DepositError> {
    if event.event == DepositEventKind::Detected {
        return Err(MessageError::UnknownRoutingKey(event.event.routing_key().to_owned()).into());
    }
    let mut tx = pool.begin().await?;
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO processed_messages (message_id, routing_key, deposit_id, outcome)
         VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id",
    )
    .bind(event.id)
    .bind(event.event.routing_key())
    .bind(event.deposit_id)
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        tx.rollback().await?;
        tracing::info!("message already applied; acking without changes");
        return Ok(Outcome::DuplicateMessage);
    }
    let outcome = match event.event {
        DepositEventKind::Confirmed => credit(&mut tx, event).await?,
        _ => record_orphan(&mut tx, event).await?,
    };
    sqlx::query("UPDATE processed_messages SET outcome = $2 WHERE message_id = $1")
        .bind(event.id)
        .bind(outcome.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(outcome = outcome.as_str(), "deposit event applied");
    Ok(outcome)
}

/// Credits a confirmed deposit unless it is zero, stale, or already credited.
async fn credit(conn: &mut PgConnection, event: &DepositEvent) -> Result<Outcome, DepositError> {
    assert_eq!(
        event.event,
        DepositEventKind::Confirmed,
        "credit takes confirmations only"
    );
    let asset: AssetSymbol = event.asset.parse()?;
    if event.amount.is_zero() {
        tracing::warn!("confirmed deposit of zero base units; nothing to credit");
        return Ok(Outcome::ZeroAmount);
    }
    let orphaned_later: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deposit_orphans WHERE deposit_id = $1 AND occurred_at >= $2)",
    )
    .bind(event.deposit_id)
    .bind(event.occurred_at)
    .fetch_one(&mut *conn)
    .await?;
    if orphaned_later {
        tracing::warn!("confirmation is older than an orphan of the same deposit; not crediting");
        return Ok(Outcome::SupersededByOrphan);
    }
    journal::ensure_asset(conn, &asset, event.decimals).await?;
    let transfer = Transfer::deposit(
        event.deposit_id,
        event.member.clone(),
        asset,
        event.amount.clone(),
    )?;
    let transfer_id = match journal::post(conn, &transfer).await? {
        Posted::AlreadyPosted { transfer_id } => {
            tracing::info!(%transfer_id, "deposit already credited; recording message only");
            return Ok(Outcome::DepositAlreadyCredited { transfer_id });
        }
        Posted::New { transfer_id } => transfer_id,
    };
    sqlx::query(
        "INSERT INTO deposit_credits (deposit_id, transfer_id, message_id, member_id, asset,
             amount, chain, txid, output_index, block_height, block_hash, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::numeric, $11, $12)",
    )
    .bind(event.deposit_id)
    .bind(transfer_id)
    .bind(event.id)
    .bind(event.member.as_str())
    .bind(&event.asset)
    .bind(numeric::to_numeric(&event.amount))
    .bind(&event.chain)
    .bind(&event.txid)
    .bind(i64::from(event.index))
    .bind(event.block_height.to_string())
    .bind(&event.block_hash)
    .bind(event.occurred_at)
    .execute(&mut *conn)
    .await?;
    tracing::info!(%transfer_id, member = %event.member, asset = %event.asset,
        amount = %event.amount, "deposit credited");
    Ok(Outcome::Credited { transfer_id })
}

/// Records an orphaned deposit, raising an alert if it had been credited.
async fn record_orphan(
    conn: &mut PgConnection,
    event: &DepositEvent,
) -> Result<Outcome, DepositError> {
    assert_eq!(
        event.event,
        DepositEventKind::Orphaned,
        "record_orphan takes orphans only"
    );
    let credited: Option<(Uuid, String, String, bigdecimal::BigDecimal)> = sqlx::query_as(
        "SELECT transfer_id, member_id, asset, amount FROM deposit_credits WHERE deposit_id = $1",
    )
    .bind(event.deposit_id)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO deposit_orphans (message_id, deposit_id, was_confirmed, was_credited,
             block_hash, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.id)
    .bind(event.deposit_id)
    .bind(event.was_confirmed)
    .bind(credited.is_some())
    .bind(&event.block_hash)
    .bind(event.occurred_at)
    .execute(&mut *conn)
    .await?;
    let Some((transfer_id, member, asset, amount)) = credited else {
        tracing::info!(
            was_confirmed = event.was_confirmed,
            "orphaned deposit was never credited"
        );
        return Ok(Outcome::OrphanRecorded);
    };
    let alert_id: i64 = sqlx::query_scalar(
        "INSERT INTO credit_reversal_alerts (message_id, deposit_id, transfer_id, member_id,
             asset, amount, was_confirmed, block_hash, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING id",
    )
    .bind(event.id)
    .bind(event.deposit_id)
    .bind(transfer_id)
    .bind(&member)
    .bind(&asset)
    .bind(&amount)
    .bind(event.was_confirmed)
    .bind(&event.block_hash)
    .bind(event.occurred_at)
    .fetch_one(&mut *conn)
    .await?;
    tracing::error!(alert_id, %transfer_id, member, asset, amount = %amount.to_plain_string(),
        was_confirmed = event.was_confirmed, chain = %event.chain, txid = %event.txid,
        "credited deposit was orphaned: operator must review (nothing was debited)");
    Ok(Outcome::ReversalAlert { alert_id })
}

/// The [`Handler`] for [`DEPOSITS_QUEUE`]: [`parse_delivery`] then [`apply`].
#[derive(Debug, Clone)]
pub struct DepositHandler {
    pool: PgPool,
}

impl DepositHandler {
    /// A handler writing to `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Handler for DepositHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let routing_key = delivery.routing_key.as_str();
        let span = tracing::info_span!("deposit_event", %routing_key,
            message_id = tracing::field::Empty, deposit_id = tracing::field::Empty);
        async {
            let event = parse_delivery(routing_key, &delivery.data)
                .map_err(|error| HandlerError::Reject(error.to_string()))?;
            let span = tracing::Span::current();
            span.record("message_id", tracing::field::display(event.id));
            span.record("deposit_id", tracing::field::display(event.deposit_id));
            apply(&self.pool, &event)
                .await
                .map(|_| ())
                .map_err(DepositError::into_handler_error)
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bound_routing_keys_are_accepted() {
        let body = br#"{"version":1}"#;
        assert_eq!(
            parse_delivery("deposit.detected", body),
            Err(MessageError::UnknownRoutingKey("deposit.detected".into()))
        );
        assert_eq!(
            parse_delivery("sweep.done", body),
            Err(MessageError::UnknownRoutingKey("sweep.done".into()))
        );
        assert!(matches!(
            parse_delivery("deposit.confirmed", b"[]"),
            Err(MessageError::Malformed(_))
        ));
    }

    #[test]
    fn refusals_dead_letter_and_database_errors_retry() {
        let refused = DepositError::Refused("decimals differ".into()).into_handler_error();
        assert!(matches!(refused, HandlerError::Reject(reason) if reason.contains("decimals")));
        let down = DepositError::Database(sqlx::Error::PoolTimedOut).into_handler_error();
        assert!(matches!(down, HandlerError::Retry(_)));
    }
}
