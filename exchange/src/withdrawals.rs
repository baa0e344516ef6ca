//! Withdrawals on the exchange side (DESIGN.md, "Withdrawals"):
//!
//! - [`request`]: in one database transaction, lock `amount + withdraw_fee` of the member's
//!   `available` funds (transfer `withdrawal_lock`: debit `available`, credit `locked`),
//!   record the withdrawal (`withdrawals`, status `requested`) and put the
//!   `withdrawal.request` command in the outbox ([`crate::outbox`] relays it to coinhubd).
//!   Idempotent on the withdrawal id.
//! - [`settle`], the handler of queue [`WITHDRAWALS_QUEUE`] (`withdrawal.confirmed`,
//!   `withdrawal.failed` from `coinhub.events`), exactly once per message id and per
//!   withdrawal:
//!   - `confirmed`: transfer `withdrawal_settle`: debit the member's `locked` by
//!     `amount + fee`, credit the platform's `hot_wallet` by `amount` (the coins left our
//!     custody: the mirror image of a deposit credit) and `fee_revenue` by `fee`; in the same
//!     transfer, the network fee the hot wallet paid (`fee` in `fee_asset`, the chain's
//!     native coin) moves from the platform's `hot_wallet` to its `network_fees` (an
//!     expense), both of `fee_asset`. The txid and the network fee are recorded on the
//!     withdrawal; the fee is recorded but not booked (`network_fee_booked = false`, with a
//!     warning) when `fee_asset` is not a ledger asset or the ledger's hot wallet of it holds
//!     less than the fee (it never goes below zero: e.g. gas topped up outside the ledger).
//!   - `failed`: transfer `withdrawal_unlock`: debit `locked`, credit `available`, both by
//!     `amount + fee`; the reason is recorded.
//!   - An event for an unknown withdrawal, or whose member, asset or amount differ from the
//!     withdrawal's, is dead-lettered with the mismatch and changes nothing. An event for a
//!     withdrawal already settled the same way is acked and changes nothing; one that
//!     contradicts it (`failed` after `confirmed` or the reverse) is logged at error level
//!     and recorded in `withdrawal_alerts` for an operator; nothing is posted.

use bigdecimal::BigDecimal;
use coinhub_events::consumer::{Handler, HandlerError};
use coinhub_events::numeric;
use coinhub_events::topology::{COMMANDS_EXCHANGE, routing};
use coinhub_events::{
    BaseUnits, MemberId, MessageError, SCHEMA_VERSION, WithdrawalEvent, WithdrawalEventKind,
    WithdrawalRequest,
};
use lapin::message::Delivery;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool, Row};
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::AssetsConfig;
use crate::journal::{self, JournalError, Posted};
use crate::ledger::{AccountKey, AssetSymbol, LedgerError, Transfer};
use crate::outbox;

/// The exchange's durable queue of withdrawal settlements, bound to `coinhub.events`.
pub const WITHDRAWALS_QUEUE: &str = "coinhub-exchange.withdrawals";

/// The routing keys [`WITHDRAWALS_QUEUE`] is bound to (`signed` and `broadcast` are
/// informational and not consumed).
pub const ROUTING_KEYS: [&str; 2] = [routing::WITHDRAWAL_CONFIRMED, routing::WITHDRAWAL_FAILED];

/// Longest destination the exchange accepts, in characters. The destination's syntax is
/// checked by coinhubd, which answers a bad one with `withdrawal.failed`.
pub const DESTINATION_MAX_CHARS: usize = 128;

/// A withdrawal as a caller (CLI, later the HTTP API) asks for it, unvalidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWithdrawal {
    /// The withdrawal's id (idempotency key); a fresh UUID v4 when `None`.
    pub id: Option<Uuid>,
    /// The member who withdraws.
    pub member: String,
    /// The asset symbol (case-insensitive), e.g. `"BTC"`.
    pub asset: String,
    /// What the destination receives, in base units (a positive decimal integer).
    pub amount: String,
    /// Where to pay, as the chain writes addresses (1 to 128 characters).
    pub destination: String,
}

/// Where a withdrawal stands on the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WithdrawalStatus {
    /// Funds locked, `withdrawal.request` sent (or queued in the outbox).
    Requested,
    /// Paid: locked funds debited to the hot wallet and fee revenue.
    Confirmed,
    /// Refused or cancelled by coinhubd: locked funds returned to `available`.
    Failed,
}

impl WithdrawalStatus {
    /// As stored in `withdrawals.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [Self::Requested, Self::Confirmed, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == value)
    }
}

/// A stored withdrawal (`withdrawals` row). Amounts are base units of `asset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Withdrawal {
    /// The withdrawal's id.
    pub id: Uuid,
    /// The member.
    pub member: MemberId,
    /// The asset symbol as the ledger records it.
    pub asset: String,
    /// What the destination receives.
    pub amount: BaseUnits,
    /// The exchange's withdrawal fee (to `fee_revenue` on confirmation).
    pub fee: BaseUnits,
    /// The asset's decimals.
    pub decimals: u8,
    /// The destination, as requested.
    pub destination: String,
    /// `requested`, `confirmed` or `failed`.
    pub status: WithdrawalStatus,
    /// The paying transaction (`confirmed`).
    pub txid: Option<String>,
    /// This withdrawal's share of the network fee, in base units of `network_fee_asset`
    /// (`confirmed`, informational: the platform pays it).
    pub network_fee: Option<BaseUnits>,
    /// The asset the network fee was paid in.
    pub network_fee_asset: Option<String>,
    /// Whether the network fee is booked in the ledger (`withdrawal_settle`: platform
    /// `hot_wallet` → `network_fees` of `network_fee_asset`): `Some(false)` when it is only
    /// recorded here (unknown asset, or the ledger's hot wallet could not cover it); `None`
    /// when no fee was reported.
    pub network_fee_booked: Option<bool>,
    /// Height of the block holding `txid`.
    pub block_height: Option<u64>,
    /// Why it failed (`failed`).
    pub reason: Option<String>,
    /// When the funds were locked.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// When it was confirmed or failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub settled_at: Option<OffsetDateTime>,
}

impl Withdrawal {
    /// `amount + fee`: what was locked.
    pub fn total(&self) -> BaseUnits {
        crate::ledger::checked_add(&self.amount, &self.fee)
            .expect("amount + fee was checked when the withdrawal was locked")
    }
}

/// What [`request`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// The withdrawal (new, or the one already stored under the id).
    pub withdrawal: Withdrawal,
    /// False if a withdrawal with this id already existed (nothing was written).
    pub created: bool,
}

/// Why [`request`] refused a withdrawal. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A field is malformed; `field` names it (`member`, `asset`, `amount`, `destination`).
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The member has no account in the ledger.
    #[error("member: unknown member {member:?} (no accounts in the ledger)")]
    UnknownMember {
        /// The member id.
        member: String,
    },
    /// The asset is not in the ledger's `assets`.
    #[error("asset: unknown asset {asset:?}")]
    UnknownAsset {
        /// The symbol given.
        asset: String,
    },
    /// The member's `available` balance is below `amount + fee`.
    #[error(
        "amount: insufficient funds: {member} has {available} {asset} available, the withdrawal needs {required} (amount plus the withdrawal fee)"
    )]
    InsufficientFunds {
        /// The member.
        member: String,
        /// The asset.
        asset: String,
        /// Their available balance, base units.
        available: BaseUnits,
        /// `amount + fee`, base units.
        required: BaseUnits,
    },
    /// A withdrawal with this id exists with a different `field`.
    #[error("id: withdrawal {id} already exists with another {field}")]
    IdReused {
        /// The id.
        id: Uuid,
        /// The first field that differs.
        field: &'static str,
    },
    /// The ledger refused the lock for another reason (a broken invariant).
    #[error("ledger refused the withdrawal: {0}")]
    Ledger(String),
    /// PostgreSQL failed; nothing was committed. Retrying may succeed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<JournalError> for RequestError {
    fn from(error: JournalError) -> Self {
        match error {
            JournalError::Database(error) => Self::Database(error),
            other => Self::Ledger(other.to_string()),
        }
    }
}

/// The checked fields of a [`NewWithdrawal`].
struct Checked {
    member: MemberId,
    asset: String,
    amount: BaseUnits,
    destination: String,
}

/// Checks the fields without I/O: member id syntax, asset symbol syntax, amount a positive
/// integer of base units, destination 1 to [`DESTINATION_MAX_CHARS`] characters without
/// surrounding or control whitespace.
fn check(new: &NewWithdrawal) -> Result<Checked, RequestError> {
    let invalid = |field, reason: String| RequestError::InvalidField { field, reason };
    let member: MemberId = new.member.parse().map_err(|e| invalid("member", e))?;
    let asset: AssetSymbol = new
        .asset
        .parse()
        .map_err(|e: LedgerError| invalid("asset", e.to_string()))?;
    let amount: BaseUnits = new
        .amount
        .parse()
        .map_err(|e: coinhub_events::BaseUnitsError| invalid("amount", e.to_string()))?;
    if amount.is_zero() {
        return Err(invalid("amount", "must be greater than zero".into()));
    }
    let destination = new.destination.as_str();
    let chars = destination.chars().count();
    if chars == 0 {
        return Err(invalid("destination", "is empty".into()));
    }
    if chars > DESTINATION_MAX_CHARS {
        return Err(invalid(
            "destination",
            format!("has {chars} characters, at most {DESTINATION_MAX_CHARS} are allowed"),
        ));
    }
    if destination.trim() != destination || destination.chars().any(char::is_control) {
        return Err(invalid(
            "destination",
            "has surrounding whitespace or control characters".into(),
        ));
    }
    Ok(Checked {
        member,
        asset: asset.as_str().to_owned(),
        amount,
        destination: destination.to_owned(),
    })
}

/// Requests a withdrawal: in one transaction, locks `amount + withdraw_fee` (the fee from
/// `assets`, 0 when not configured) from the member's `available` to `locked`, records the
/// withdrawal as `requested`, and queues `withdrawal.request` in the outbox. The same id
/// again returns the stored withdrawal with `created: false` and writes nothing.
///
/// Errors: [`RequestError`]; nothing is written on error.
pub async fn request(
    pool: &PgPool,
    assets: &AssetsConfig,
    new: &NewWithdrawal,
) -> Result<Requested, RequestError> {
    let checked = check(new)?;
    let id = new.id.unwrap_or_else(Uuid::new_v4);
    let mut tx = pool.begin().await?;
    if let Some(existing) = load(&mut *tx, id).await? {
        tx.rollback().await?;
        return same_request(existing, &checked);
    }
    let Some((symbol, decimals)) = find_asset(&mut tx, &checked.asset).await? else {
        return Err(RequestError::UnknownAsset {
            asset: checked.asset,
        });
    };
    let known_member: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE member_id = $1)")
            .bind(checked.member.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if !known_member {
        return Err(RequestError::UnknownMember {
            member: checked.member.to_string(),
        });
    }
    let asset: AssetSymbol = symbol
        .parse()
        .map_err(|e: LedgerError| RequestError::Ledger(e.to_string()))?;
    let fee = assets.withdraw_fee(&symbol);
    let transfer = Transfer::withdrawal_lock(
        id,
        checked.member.clone(),
        asset.clone(),
        &checked.amount,
        &fee,
    )
    .map_err(|e| RequestError::InvalidField {
        field: "amount",
        reason: e.to_string(),
    })?;
    let transfer_id = match journal::post(&mut tx, &transfer).await {
        Ok(Posted::New { transfer_id }) => transfer_id,
        Ok(Posted::AlreadyPosted { .. }) => {
            // A concurrent request with the same id committed first.
            tx.rollback().await?;
            let existing = load(pool, id)
                .await?
                .ok_or_else(|| RequestError::Ledger(format!("lock of {id} without withdrawal")))?;
            return same_request(existing, &checked);
        }
        Err(JournalError::InsufficientBalance { .. }) => {
            tx.rollback().await?;
            let available =
                journal::balance(pool, &AccountKey::available(checked.member.clone(), asset))
                    .await?;
            let required = crate::ledger::checked_add(&checked.amount, &fee)
                .expect("the lock transfer was built from this sum");
            return Err(RequestError::InsufficientFunds {
                member: checked.member.to_string(),
                asset: symbol,
                available,
                required,
            });
        }
        Err(other) => return Err(other.into()),
    };
    let requested_at: OffsetDateTime = sqlx::query_scalar(
        "INSERT INTO withdrawals (id, member_id, asset, amount, fee, decimals, destination,
             lock_transfer_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING requested_at",
    )
    .bind(id)
    .bind(checked.member.as_str())
    .bind(&symbol)
    .bind(numeric::to_numeric(&checked.amount))
    .bind(numeric::to_numeric(&fee))
    .bind(i16::from(decimals))
    .bind(&checked.destination)
    .bind(transfer_id)
    .fetch_one(&mut *tx)
    .await?;
    let message = WithdrawalRequest {
        version: SCHEMA_VERSION,
        id,
        occurred_at: requested_at,
        member: checked.member.clone(),
        asset: symbol.clone(),
        amount: checked.amount.to_string(),
        decimals,
        destination: checked.destination.clone(),
    };
    outbox::enqueue(
        &mut tx,
        COMMANDS_EXCHANGE,
        routing::WITHDRAWAL_REQUEST,
        id,
        &message,
    )
    .await?;
    let withdrawal = load(&mut *tx, id)
        .await?
        .expect("the withdrawal was inserted in this transaction");
    tx.commit().await?;
    tracing::info!(%id, member = %checked.member, asset = %symbol, amount = %checked.amount,
        %fee, "withdrawal requested; funds locked");
    Ok(Requested {
        withdrawal,
        created: true,
    })
}

/// The stored withdrawal if `checked` asks for the same thing, else [`RequestError::IdReused`].
fn same_request(existing: Withdrawal, checked: &Checked) -> Result<Requested, RequestError> {
    let field = if existing.member != checked.member {
        Some("member")
    } else if !existing.asset.eq_ignore_ascii_case(&checked.asset) {
        Some("asset")
    } else if existing.amount != checked.amount {
        Some("amount")
    } else if existing.destination != checked.destination {
        Some("destination")
    } else {
        None
    };
    match field {
        Some(field) => Err(RequestError::IdReused {
            id: existing.id,
            field,
        }),
        None => Ok(Requested {
            withdrawal: existing,
            created: false,
        }),
    }
}

/// The ledger's symbol and decimals of `asset`, matched ignoring case (an exact match wins).
async fn find_asset(
    conn: &mut PgConnection,
    asset: &str,
) -> Result<Option<(String, u8)>, RequestError> {
    let row: Option<(String, i16)> = sqlx::query_as(
        "SELECT symbol, decimals FROM assets WHERE upper(symbol) = upper($1)
          ORDER BY symbol = $1 DESC, symbol LIMIT 1",
    )
    .bind(asset)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(symbol, decimals)| {
        let decimals = u8::try_from(decimals)
            .map_err(|_| RequestError::Ledger(format!("asset {symbol} has {decimals} decimals")))?;
        Ok((symbol, decimals))
    })
    .transpose()
}

const WITHDRAWAL_COLUMNS: &str = "SELECT id, member_id, asset, amount, fee, decimals,
    destination, status, txid, network_fee, network_fee_asset,
    network_fee_booked, block_height::text AS block_height,
    reason, requested_at, settled_at FROM withdrawals";

/// The withdrawal `id`, if stored.
///
/// Errors: the database's; a row that breaks an invariant is reported as
/// [`sqlx::Error::Decode`].
pub async fn load<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<Withdrawal>, sqlx::Error> {
    sqlx::query(&format!("{WITHDRAWAL_COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .map(|row| withdrawal_from_row(&row))
        .transpose()
}

/// `member`'s withdrawals, oldest first.
///
/// Errors: as [`load`].
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    member: &MemberId,
) -> Result<Vec<Withdrawal>, sqlx::Error> {
    sqlx::query(&format!(
        "{WITHDRAWAL_COLUMNS} WHERE member_id = $1 ORDER BY requested_at, id"
    ))
    .bind(member.as_str())
    .fetch_all(executor)
    .await?
    .iter()
    .map(withdrawal_from_row)
    .collect()
}

fn withdrawal_from_row(row: &PgRow) -> Result<Withdrawal, sqlx::Error> {
    fn corrupt(what: String) -> sqlx::Error {
        sqlx::Error::Decode(format!("corrupt withdrawals row: {what}").into())
    }
    let units =
        |value: BigDecimal| numeric::from_numeric(&value).map_err(|e| corrupt(e.to_string()));
    let member: String = row.try_get("member_id")?;
    let status: String = row.try_get("status")?;
    let decimals: i16 = row.try_get("decimals")?;
    let network_fee: Option<BigDecimal> = row.try_get("network_fee")?;
    let block_height: Option<String> = row.try_get("block_height")?;
    Ok(Withdrawal {
        id: row.try_get("id")?,
        member: member.parse().map_err(corrupt)?,
        asset: row.try_get("asset")?,
        amount: units(row.try_get("amount")?)?,
        fee: units(row.try_get("fee")?)?,
        decimals: u8::try_from(decimals).map_err(|e| corrupt(e.to_string()))?,
        destination: row.try_get("destination")?,
        status: WithdrawalStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("status {status:?}")))?,
        txid: row.try_get("txid")?,
        network_fee: network_fee.map(units).transpose()?,
        network_fee_asset: row.try_get("network_fee_asset")?,
        network_fee_booked: row.try_get("network_fee_booked")?,
        block_height: block_height
            .map(|height| {
                height
                    .parse()
                    .map_err(|_| corrupt(format!("height {height}")))
            })
            .transpose()?,
        reason: row.try_get("reason")?,
        requested_at: row.try_get("requested_at")?,
        settled_at: row.try_get("settled_at")?,
    })
}

/// What applying one settlement event did. Stored in `withdrawal_messages.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// `confirmed`: the locked funds were debited by transfer `transfer_id`.
    Settled {
        /// The `withdrawal_settle` transfer.
        transfer_id: Uuid,
    },
    /// `failed`: the locked funds went back to `available` by transfer `transfer_id`.
    Unlocked {
        /// The `withdrawal_unlock` transfer.
        transfer_id: Uuid,
    },
    /// The message id was applied before; nothing changed (nothing was committed).
    DuplicateMessage,
    /// The withdrawal was already settled the way this event says; only the message id was
    /// recorded.
    AlreadySettled,
    /// The event contradicts the withdrawal's final status; alert `alert_id` awaits an
    /// operator, nothing was posted.
    ConflictAlert {
        /// Row id in `withdrawal_alerts`.
        alert_id: i64,
    },
}

impl SettleOutcome {
    /// The value stored in `withdrawal_messages.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Settled { .. } => "settled",
            Self::Unlocked { .. } => "unlocked",
            Self::DuplicateMessage => "duplicate_message",
            Self::AlreadySettled => "already_settled",
            Self::ConflictAlert { .. } => "conflict_alert",
        }
    }
}

/// Why a settlement event could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The message is not an event this consumer accepts.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// No withdrawal has this id.
    #[error("unknown withdrawal {withdrawal_id}")]
    UnknownWithdrawal {
        /// The event's `withdrawal_id`.
        withdrawal_id: Uuid,
    },
    /// The event's `field` differs from the stored withdrawal's.
    #[error(
        "withdrawal {withdrawal_id}: {field} mismatch: the event says {event:?}, the withdrawal has {stored:?}"
    )]
    Mismatch {
        /// The withdrawal.
        withdrawal_id: Uuid,
        /// `member`, `asset` or `amount`.
        field: &'static str,
        /// The event's value.
        event: String,
        /// The stored value.
        stored: String,
    },
    /// The ledger refused the posting (e.g. the hot wallet would go below zero).
    #[error("ledger refused event: {0}")]
    Refused(String),
    /// PostgreSQL failed; nothing was committed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl SettleError {
    /// Database failures become [`HandlerError::Retry`] (requeue), everything else
    /// [`HandlerError::Reject`] (dead-letter with this text as the reason).
    pub fn into_handler_error(self) -> HandlerError {
        match self {
            Self::Database(_) => HandlerError::Retry(self.to_string()),
            _ => HandlerError::Reject(self.to_string()),
        }
    }
}

impl From<JournalError> for SettleError {
    fn from(error: JournalError) -> Self {
        match error {
            JournalError::Database(error) => Self::Database(error),
            refused => Self::Refused(refused.to_string()),
        }
    }
}

impl From<LedgerError> for SettleError {
    fn from(error: LedgerError) -> Self {
        Self::Refused(error.to_string())
    }
}

/// Parses a delivery on [`WITHDRAWALS_QUEUE`].
///
/// Errors: [`MessageError::UnknownRoutingKey`] for a routing key not in [`ROUTING_KEYS`];
/// otherwise those of [`WithdrawalEvent::parse`].
pub fn parse_delivery(routing_key: &str, body: &[u8]) -> Result<WithdrawalEvent, MessageError> {
    if !ROUTING_KEYS.contains(&routing_key) {
        return Err(MessageError::UnknownRoutingKey(routing_key.to_owned()));
    }
    WithdrawalEvent::parse(body, routing_key)
}

/// Applies a `withdrawal.confirmed` or `withdrawal.failed` event in one transaction: its
/// posting, the withdrawal's new status and the message id commit together.
///
/// Errors: [`SettleError`]; on error nothing is committed.
pub async fn settle(pool: &PgPool, event: &WithdrawalEvent) -> Result<SettleOutcome, SettleError> {
    let status = match event.event {
        WithdrawalEventKind::Confirmed => WithdrawalStatus::Confirmed,
        WithdrawalEventKind::Failed => WithdrawalStatus::Failed,
        other => {
            return Err(MessageError::UnknownRoutingKey(other.routing_key().to_owned()).into());
        }
    };
    let mut tx = pool.begin().await?;
    let stored = sqlx::query(&format!("{WITHDRAWAL_COLUMNS} WHERE id = $1 FOR UPDATE"))
        .bind(event.withdrawal_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| withdrawal_from_row(&row))
        .transpose()?;
    let Some(withdrawal) = stored else {
        return Err(SettleError::UnknownWithdrawal {
            withdrawal_id: event.withdrawal_id,
        });
    };
    check_matches(&withdrawal, event)?;
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO withdrawal_messages (message_id, routing_key, withdrawal_id, outcome)
         VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id",
    )
    .bind(event.id)
    .bind(event.event.routing_key())
    .bind(event.withdrawal_id)
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        tx.rollback().await?;
        tracing::info!("message already applied; acking without changes");
        return Ok(SettleOutcome::DuplicateMessage);
    }
    let outcome = match (withdrawal.status, status) {
        (WithdrawalStatus::Requested, WithdrawalStatus::Confirmed) => {
            apply_confirmed(&mut tx, &withdrawal, event).await?
        }
        (WithdrawalStatus::Requested, _) => apply_failed(&mut tx, &withdrawal, event).await?,
        (stored, new) if stored == new => {
            tracing::info!(
                status = stored.as_str(),
                "withdrawal already settled; no change"
            );
            SettleOutcome::AlreadySettled
        }
        (stored, _) => record_conflict(&mut tx, &withdrawal, stored, event).await?,
    };
    sqlx::query("UPDATE withdrawal_messages SET outcome = $2 WHERE message_id = $1")
        .bind(event.id)
        .bind(outcome.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(outcome = outcome.as_str(), "withdrawal event applied");
    Ok(outcome)
}

/// The event names the stored withdrawal's member, asset (ignoring case) and amount.
fn check_matches(withdrawal: &Withdrawal, event: &WithdrawalEvent) -> Result<(), SettleError> {
    let mismatch = |field, event: &str, stored: &str| SettleError::Mismatch {
        withdrawal_id: withdrawal.id,
        field,
        event: event.to_owned(),
        stored: stored.to_owned(),
    };
    if event.member != withdrawal.member {
        return Err(mismatch(
            "member",
            event.member.as_str(),
            withdrawal.member.as_str(),
        ));
    }
    if !event.asset.eq_ignore_ascii_case(&withdrawal.asset) {
        return Err(mismatch("asset", &event.asset, &withdrawal.asset));
    }
    if event.amount != withdrawal.amount.as_str() {
        return Err(mismatch(
            "amount",
            &event.amount,
            withdrawal.amount.as_str(),
        ));
    }
    Ok(())
}

fn ledger_asset(withdrawal: &Withdrawal) -> Result<AssetSymbol, SettleError> {
    Ok(withdrawal.asset.parse()?)
}

async fn apply_confirmed(
    conn: &mut PgConnection,
    withdrawal: &Withdrawal,
    event: &WithdrawalEvent,
) -> Result<SettleOutcome, SettleError> {
    assert_eq!(event.event, WithdrawalEventKind::Confirmed);
    assert_eq!(withdrawal.status, WithdrawalStatus::Requested);
    let asset = ledger_asset(withdrawal)?;
    let network_fee = network_fee_to_book(conn, withdrawal, event).await?;
    let mut booked = None;
    if let Some((fee_asset, fee)) = &network_fee {
        let transfer = Transfer::withdrawal_settle_with_network_fee(
            withdrawal.id,
            withdrawal.member.clone(),
            asset.clone(),
            &withdrawal.amount,
            &withdrawal.fee,
            Some((fee_asset.clone(), fee)),
        )?;
        // In a savepoint: if the ledger's hot wallet of the fee asset cannot cover the fee
        // (its balance never goes below zero), settle without the network fee legs.
        let mut savepoint = conn.begin().await?;
        match journal::post(&mut savepoint, &transfer).await {
            Ok(posted) => {
                savepoint.commit().await?;
                booked = Some(posted_once(posted)?);
            }
            Err(JournalError::InsufficientBalance { account })
                if account == AccountKey::hot_wallet(fee_asset.clone()).to_string() =>
            {
                savepoint.rollback().await?;
                tracing::warn!(withdrawal_id = %withdrawal.id, %fee_asset, network_fee = %fee,
                    "the ledger's hot wallet cannot cover the network fee (funded outside the \
                     ledger?); settling without booking it, the fee is recorded on the \
                     withdrawal (network_fee_booked = false)");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let network_fee_booked = match (&event.fee, &network_fee) {
        (None, _) => None,
        (Some(fee), _) if fee.is_zero() => Some(true),
        (Some(_), None) => Some(false),
        (Some(_), Some(_)) => Some(booked.is_some()),
    };
    let transfer_id = match booked {
        Some(transfer_id) => transfer_id,
        None => {
            let transfer = Transfer::withdrawal_settle(
                withdrawal.id,
                withdrawal.member.clone(),
                asset,
                &withdrawal.amount,
                &withdrawal.fee,
            )?;
            posted_once(journal::post(conn, &transfer).await?)?
        }
    };
    let updated = sqlx::query(
        "UPDATE withdrawals SET status = 'confirmed', settle_transfer_id = $2,
             settle_message_id = $3, txid = $4, network_fee = $5, network_fee_asset = $6,
             block_height = $7::numeric, network_fee_booked = $8, settled_at = now()
         WHERE id = $1 AND status = 'requested'",
    )
    .bind(withdrawal.id)
    .bind(transfer_id)
    .bind(event.id)
    .bind(&event.txid)
    .bind(event.fee.as_ref().map(numeric::to_numeric))
    .bind(&event.fee_asset)
    .bind(event.block_height.map(|height| height.to_string()))
    .bind(network_fee_booked)
    .execute(&mut *conn)
    .await?;
    assert_eq!(
        updated.rows_affected(),
        1,
        "the locked row is still requested"
    );
    tracing::info!(%transfer_id, member = %withdrawal.member, asset = %withdrawal.asset,
        amount = %withdrawal.amount, fee = %withdrawal.fee, txid = ?event.txid,
        network_fee = ?event.fee, network_fee_asset = ?event.fee_asset, ?network_fee_booked,
        "withdrawal confirmed; locked funds debited");
    Ok(SettleOutcome::Settled { transfer_id })
}

/// The network fee of a `confirmed` event to book, in the ledger's symbol of its
/// `fee_asset`: `None` when the event has no fee or no fee asset (older events), when the fee
/// is zero, or, with a warning, when the fee asset is not a ledger asset (nothing to book it
/// on; the fee is still recorded on the withdrawal).
async fn network_fee_to_book(
    conn: &mut PgConnection,
    withdrawal: &Withdrawal,
    event: &WithdrawalEvent,
) -> Result<Option<(AssetSymbol, BaseUnits)>, SettleError> {
    let (Some(fee), Some(fee_asset)) = (&event.fee, &event.fee_asset) else {
        if event.fee.is_some() != event.fee_asset.is_some() {
            tracing::warn!(withdrawal_id = %withdrawal.id, fee = ?event.fee,
                fee_asset = ?event.fee_asset,
                "network fee without its asset (or the reverse); not booked");
        }
        return Ok(None);
    };
    if fee.is_zero() {
        return Ok(None);
    }
    // The ledger's symbol, matched ignoring case (an exact match wins), as for withdrawals.
    let symbol: Option<String> = sqlx::query_scalar(
        "SELECT symbol FROM assets WHERE upper(symbol) = upper($1)
          ORDER BY symbol = $1 DESC, symbol LIMIT 1",
    )
    .bind(fee_asset)
    .fetch_optional(&mut *conn)
    .await?;
    match symbol.map(|symbol| symbol.parse::<AssetSymbol>()) {
        Some(Ok(symbol)) => Ok(Some((symbol, fee.clone()))),
        Some(Err(error)) => Err(error.into()),
        None => {
            tracing::warn!(withdrawal_id = %withdrawal.id, %fee_asset, network_fee = %fee,
                "network fee asset unknown to the ledger; fee recorded on the withdrawal, \
                 not booked");
            Ok(None)
        }
    }
}

async fn apply_failed(
    conn: &mut PgConnection,
    withdrawal: &Withdrawal,
    event: &WithdrawalEvent,
) -> Result<SettleOutcome, SettleError> {
    assert_eq!(event.event, WithdrawalEventKind::Failed);
    assert_eq!(withdrawal.status, WithdrawalStatus::Requested);
    let transfer = Transfer::withdrawal_unlock(
        withdrawal.id,
        withdrawal.member.clone(),
        ledger_asset(withdrawal)?,
        &withdrawal.amount,
        &withdrawal.fee,
    )?;
    let transfer_id = posted_once(journal::post(conn, &transfer).await?)?;
    let reason = event
        .reason
        .clone()
        .unwrap_or_else(|| "(coinhubd gave no reason)".to_owned());
    let updated = sqlx::query(
        "UPDATE withdrawals SET status = 'failed', settle_transfer_id = $2,
             settle_message_id = $3, reason = $4, settled_at = now()
         WHERE id = $1 AND status = 'requested'",
    )
    .bind(withdrawal.id)
    .bind(transfer_id)
    .bind(event.id)
    .bind(&reason)
    .execute(&mut *conn)
    .await?;
    assert_eq!(
        updated.rows_affected(),
        1,
        "the locked row is still requested"
    );
    tracing::warn!(%transfer_id, member = %withdrawal.member, asset = %withdrawal.asset,
        %reason, "withdrawal failed; funds unlocked");
    Ok(SettleOutcome::Unlocked { transfer_id })
}

/// A settlement transfer is posted once per withdrawal: the row is locked and `requested`,
/// so an existing settlement transfer is a broken invariant, refused (dead-lettered).
fn posted_once(posted: Posted) -> Result<Uuid, SettleError> {
    match posted {
        Posted::New { transfer_id } => Ok(transfer_id),
        Posted::AlreadyPosted { transfer_id } => Err(SettleError::Refused(format!(
            "settlement transfer {transfer_id} exists for a withdrawal still marked requested"
        ))),
    }
}

async fn record_conflict(
    conn: &mut PgConnection,
    withdrawal: &Withdrawal,
    stored: WithdrawalStatus,
    event: &WithdrawalEvent,
) -> Result<SettleOutcome, SettleError> {
    let alert_id: i64 = sqlx::query_scalar(
        "INSERT INTO withdrawal_alerts (message_id, withdrawal_id, status, event, txid, reason,
             occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id",
    )
    .bind(event.id)
    .bind(withdrawal.id)
    .bind(stored.as_str())
    .bind(event.event.routing_key())
    .bind(&event.txid)
    .bind(&event.reason)
    .bind(event.occurred_at)
    .fetch_one(&mut *conn)
    .await?;
    tracing::error!(alert_id, withdrawal_id = %withdrawal.id, status = stored.as_str(),
        event = event.event.routing_key(), txid = ?event.txid, reason = ?event.reason,
        "withdrawal event contradicts its settled status: operator must review (nothing posted)");
    Ok(SettleOutcome::ConflictAlert { alert_id })
}

/// The [`Handler`] for [`WITHDRAWALS_QUEUE`]: [`parse_delivery`] then [`settle`].
#[derive(Debug, Clone)]
pub struct SettlementHandler {
    pool: PgPool,
}

impl SettlementHandler {
    /// A handler writing to `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Handler for SettlementHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let routing_key = delivery.routing_key.as_str();
        let span = tracing::info_span!("withdrawal_event", %routing_key,
            message_id = tracing::field::Empty, withdrawal_id = tracing::field::Empty);
        async {
            let event = parse_delivery(routing_key, &delivery.data)
                .map_err(|error| HandlerError::Reject(error.to_string()))?;
            let span = tracing::Span::current();
            span.record("message_id", tracing::field::display(event.id));
            span.record(
                "withdrawal_id",
                tracing::field::display(event.withdrawal_id),
            );
            settle(&self.pool, &event)
                .await
                .map(|_| ())
                .map_err(SettleError::into_handler_error)
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(amount: &str, destination: &str) -> NewWithdrawal {
        NewWithdrawal {
            id: None,
            member: "alice".into(),
            asset: "BTC".into(),
            amount: amount.into(),
            destination: destination.into(),
        }
    }

    fn field_of(result: Result<Checked, RequestError>) -> &'static str {
        match result {
            Err(RequestError::InvalidField { field, .. }) => field,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn malformed_fields_are_named() {
        assert!(check(&new("1000", "bcrt1qxyz")).is_ok());
        for amount in ["0", "-5", "1.5", "", "007", "1e3"] {
            assert_eq!(
                field_of(check(&new(amount, "bcrt1qxyz"))),
                "amount",
                "{amount}"
            );
        }
        assert_eq!(field_of(check(&new("1", ""))), "destination");
        assert_eq!(field_of(check(&new("1", &"x".repeat(129)))), "destination");
        assert!(check(&new("1", &"x".repeat(128))).is_ok());
        assert_eq!(field_of(check(&new("1", " bc1q"))), "destination");
        let mut bad_member = new("1", "d");
        bad_member.member = "a b".into();
        assert_eq!(field_of(check(&bad_member)), "member");
        let mut bad_asset = new("1", "d");
        bad_asset.asset = "B TC".into();
        assert_eq!(field_of(check(&bad_asset)), "asset");
    }

    #[test]
    fn only_settlement_keys_are_accepted_and_mismatches_dead_letter() {
        assert_eq!(
            parse_delivery("withdrawal.signed", b"{}"),
            Err(MessageError::UnknownRoutingKey("withdrawal.signed".into()))
        );
        let mismatch = SettleError::Mismatch {
            withdrawal_id: Uuid::nil(),
            field: "amount",
            event: "2".into(),
            stored: "1".into(),
        }
        .into_handler_error();
        assert!(
            matches!(mismatch, HandlerError::Reject(reason) if reason.contains("amount mismatch"))
        );
        let down = SettleError::Database(sqlx::Error::PoolTimedOut).into_handler_error();
        assert!(matches!(down, HandlerError::Retry(_)));
    }
}
