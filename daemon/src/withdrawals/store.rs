//! The `withdrawals` table and the `withdrawal.*` events written with each change of state
//! (in the same database transaction, through the outbox).

use bigdecimal::BigDecimal;
use coinhub_events::numeric;
use coinhub_events::topology::EVENTS_EXCHANGE;
use coinhub_events::{
    BaseUnits, SCHEMA_VERSION, WithdrawalEvent, WithdrawalEventKind, WithdrawalRequest,
};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::outbox;

/// A withdrawal as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct WithdrawalRow {
    /// The request's id.
    pub withdrawal_id: Uuid,
    /// The member.
    pub member_id: String,
    /// The asset symbol, upper case.
    pub asset: String,
    /// The chain of the asset; `None` when the asset is unknown.
    pub chain: Option<String>,
    /// The destination as requested.
    pub destination: String,
    /// The amount as requested (base units, maybe invalid).
    pub amount_text: String,
    /// The amount parsed, base units; `None` when invalid.
    #[serde(serialize_with = "serialize_numeric_opt")]
    pub amount: Option<BigDecimal>,
    /// The asset's decimals.
    pub decimals: i16,
    /// `requested`, `signed`, `broadcast`, `confirmed` or `failed`.
    pub status: String,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Who cancelled it, if it was cancelled.
    pub cancelled_by: Option<String>,
    /// The payout (transaction) paying it.
    pub payout_id: Option<i64>,
    /// Its share of the network fee, base units of the chain's native asset.
    #[serde(serialize_with = "serialize_numeric_opt")]
    pub fee: Option<BigDecimal>,
    /// When the exchange requested it.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn serialize_numeric_opt<S: serde::Serializer>(
    value: &Option<BigDecimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_str(&value.with_scale(0).to_string()),
        None => serializer.serialize_none(),
    }
}

/// Columns of [`WithdrawalRow`].
pub const COLUMNS: &str = "withdrawal_id, member_id, asset, chain, destination, amount_text, amount, \
     decimals, status, failure_reason, cancelled_by, payout_id, fee, requested_at, updated_at";

/// What to put into a `withdrawal.*` event beyond the withdrawal's own fields.
#[derive(Debug, Clone, Default)]
pub struct EventDetails {
    /// The current transaction id.
    pub txid: Option<String>,
    /// This withdrawal's fee share, base units of `fee_asset`.
    pub fee: Option<BaseUnits>,
    /// The chain's native asset.
    pub fee_asset: Option<String>,
    /// The block of the mined transaction.
    pub block_height: Option<u64>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Writes the `kind` event of `row` to the outbox inside `tx`.
///
/// Errors: a stored member id that is not one (cannot happen: it was parsed on intake), the
/// database's.
pub async fn emit(
    tx: &mut Transaction<'_, Postgres>,
    row: &WithdrawalRow,
    kind: WithdrawalEventKind,
    details: EventDetails,
) -> anyhow::Result<()> {
    let event = WithdrawalEvent {
        version: SCHEMA_VERSION,
        id: Uuid::new_v4(),
        event: kind,
        occurred_at: OffsetDateTime::now_utc(),
        withdrawal_id: row.withdrawal_id,
        member: row
            .member_id
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
        chain: row.chain.clone().unwrap_or_default(),
        asset: row.asset.clone(),
        amount: row.amount_text.clone(),
        decimals: u8::try_from(row.decimals)?,
        destination: row.destination.clone(),
        txid: details.txid,
        fee: details.fee,
        fee_asset: details.fee_asset,
        block_height: details.block_height,
        reason: details.reason,
    };
    outbox::enqueue(tx, EVENTS_EXCHANGE, kind.routing_key(), event.id, &event).await?;
    Ok(())
}

/// The outcome of validating a request on intake.
#[derive(Debug, Clone)]
pub enum Intake {
    /// Valid: stored as `requested` on `chain`, for `amount` base units.
    Valid {
        /// The asset's chain.
        chain: String,
        /// The parsed amount.
        amount: BaseUnits,
        /// The destination in canonical form.
        destination: String,
    },
    /// Invalid: stored as `failed` with this reason, and `withdrawal.failed` sent.
    Invalid {
        /// The asset's chain, if the asset is known.
        chain: Option<String>,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// Stores `request` (idempotent on its id) as `requested` or, if invalid, as `failed` with
/// `withdrawal.failed`. Returns false when the id was already known (nothing changed).
///
/// Errors: the database's.
pub async fn record_request(
    pool: &PgPool,
    request: &WithdrawalRequest,
    asset: &str,
    intake: &Intake,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let (chain, amount, destination, status, reason) = match intake {
        Intake::Valid {
            chain,
            amount,
            destination,
        } => (
            Some(chain.clone()),
            Some(numeric::to_numeric(amount)),
            destination.clone(),
            "requested",
            None,
        ),
        Intake::Invalid { chain, reason } => (
            chain.clone(),
            None,
            request.destination.clone(),
            "failed",
            Some(reason.clone()),
        ),
    };
    let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
        "INSERT INTO withdrawals (withdrawal_id, member_id, asset, chain, destination, amount_text,
             amount, decimals, status, failure_reason, requested_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (withdrawal_id) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(request.id)
    .bind(request.member.as_str())
    .bind(asset)
    .bind(chain)
    .bind(destination)
    .bind(&request.amount)
    .bind(amount)
    .bind(i16::from(request.decimals))
    .bind(status)
    .bind(&reason)
    .bind(request.occurred_at)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    if let Some(reason) = reason {
        emit(
            &mut tx,
            &row,
            WithdrawalEventKind::Failed,
            EventDetails {
                reason: Some(reason),
                ..EventDetails::default()
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Fails a `requested` withdrawal (refused before signing, or cancelled by `cancelled_by`)
/// and sends `withdrawal.failed`. Returns the row, or `None` if it is not `requested`
/// (already signed: too late to cancel).
///
/// Errors: the database's.
pub async fn fail_requested(
    conn: &mut Transaction<'_, Postgres>,
    withdrawal_id: Uuid,
    reason: &str,
    cancelled_by: Option<&str>,
) -> anyhow::Result<Option<WithdrawalRow>> {
    let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
        "UPDATE withdrawals SET status = 'failed', failure_reason = $2, cancelled_by = $3,
             updated_at = now()
         WHERE withdrawal_id = $1 AND status = 'requested'
         RETURNING {COLUMNS}"
    ))
    .bind(withdrawal_id)
    .bind(reason)
    .bind(cancelled_by)
    .fetch_optional(&mut **conn)
    .await?;
    if let Some(row) = &row {
        emit(
            conn,
            row,
            WithdrawalEventKind::Failed,
            EventDetails {
                reason: Some(reason.to_owned()),
                ..EventDetails::default()
            },
        )
        .await?;
    }
    Ok(row)
}

/// Cancels a `requested` withdrawal on an operator's behalf (`coinhub withdrawals cancel`).
///
/// Errors: [`CancelError`].
pub async fn cancel(
    pool: &PgPool,
    withdrawal_id: Uuid,
    reason: &str,
    operator: &str,
) -> Result<WithdrawalRow, CancelError> {
    if reason.trim().is_empty() {
        return Err(CancelError::NoReason);
    }
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    // Lock the row so a payout engine cannot sign it concurrently.
    let current: Option<(String,)> =
        sqlx::query_as("SELECT status FROM withdrawals WHERE withdrawal_id = $1 FOR UPDATE")
            .bind(withdrawal_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(anyhow::Error::from)?;
    let Some((status,)) = current else {
        return Err(CancelError::NotFound(withdrawal_id));
    };
    let reason = format!("cancelled by {operator}: {reason}");
    let Some(row) = fail_requested(&mut tx, withdrawal_id, &reason, Some(operator)).await? else {
        return Err(CancelError::TooLate {
            id: withdrawal_id,
            status,
        });
    };
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(row)
}

/// Why `coinhub withdrawals cancel` was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such withdrawal.
    #[error("withdrawal {0} does not exist")]
    NotFound(Uuid),
    /// Already signed (or finished): cancelling now could not stop the payment.
    #[error("withdrawal {id} is {status}; only a requested (unsigned) withdrawal can be cancelled")]
    TooLate {
        /// The withdrawal.
        id: Uuid,
        /// Its status.
        status: String,
    },
    /// An empty reason.
    #[error("a cancellation needs a reason")]
    NoReason,
    /// The database's.
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

/// Withdrawals, newest first, optionally filtered.
///
/// Errors: the database's.
pub async fn list(
    pool: &PgPool,
    member: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<WithdrawalRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM withdrawals
         WHERE ($1::text IS NULL OR member_id = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY received_at DESC LIMIT $3"
    ))
    .bind(member)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A payout attempt (signed transaction) as shown by `coinhub withdrawals show`.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AttemptRow {
    /// 0 for the original, then each replacement.
    pub attempt: i32,
    /// Its transaction id.
    pub txid: String,
    /// Its fee (UTXO exact; EVM the most it can cost), base units.
    #[serde(serialize_with = "serialize_numeric")]
    pub fee: BigDecimal,
    /// When it was first sent.
    #[serde(with = "time::serde::rfc3339::option")]
    pub broadcast_at: Option<OffsetDateTime>,
}

fn serialize_numeric<S: serde::Serializer>(
    value: &BigDecimal,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.with_scale(0).to_string())
}

/// One withdrawal with its payout's attempts.
#[derive(Debug, Clone, Serialize)]
pub struct WithdrawalDetail {
    /// The withdrawal.
    #[serde(flatten)]
    pub withdrawal: WithdrawalRow,
    /// The payout's status, if any.
    pub payout_status: Option<String>,
    /// The mined attempt's block height.
    pub block_height: Option<i64>,
    /// The payout's signed transactions.
    pub attempts: Vec<AttemptRow>,
}

/// One withdrawal with its payout, or `None`.
///
/// Errors: the database's.
pub async fn show(
    conn: &mut PgConnection,
    withdrawal_id: Uuid,
) -> Result<Option<WithdrawalDetail>, sqlx::Error> {
    let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM withdrawals WHERE withdrawal_id = $1"
    ))
    .bind(withdrawal_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(withdrawal) = row else {
        return Ok(None);
    };
    let (payout_status, block_height, attempts) = match withdrawal.payout_id {
        None => (None, None, Vec::new()),
        Some(payout_id) => {
            let (status, height): (String, Option<i64>) =
                sqlx::query_as("SELECT status, block_height FROM payouts WHERE payout_id = $1")
                    .bind(payout_id)
                    .fetch_one(&mut *conn)
                    .await?;
            let attempts = sqlx::query_as(
                "SELECT attempt, txid, fee, broadcast_at FROM payout_attempts
                 WHERE payout_id = $1 ORDER BY attempt",
            )
            .bind(payout_id)
            .fetch_all(&mut *conn)
            .await?;
            (Some(status), height, attempts)
        }
    };
    Ok(Some(WithdrawalDetail {
        withdrawal,
        payout_status,
        block_height,
        attempts,
    }))
}
