//! The journal in PostgreSQL: assets, accounts, posting [`Transfer`]s and reading balances.
//!
//! Writes take a `&mut PgConnection` so the caller decides the transaction (pass
//! `&mut *tx`); a transfer is only durable once the caller commits. The database enforces
//! the ledger rules again (see `migrations/0001_ledger.sql`): entries sum to zero per asset,
//! balances never go below zero on their normal side, the journal is append-only.

use std::collections::BTreeMap;

use bigdecimal::BigDecimal;
use coinhub_events::{BaseUnits, MemberId};
use sqlx::postgres::PgDatabaseError;
use sqlx::{Executor, PgConnection, PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::ledger::{AccountKey, AccountKind, AssetSymbol, LedgerError, Owner, Transfer};
use coinhub_events::numeric::{self, NumericError};

/// What [`post`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// The transfer and its entries were written (durable once the caller commits).
    New {
        /// The transfer's id.
        transfer_id: Uuid,
    },
    /// A transfer with the same (kind, reference) already exists; nothing was written.
    AlreadyPosted {
        /// The id of the existing transfer.
        transfer_id: Uuid,
    },
}

/// A journal operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The transfer breaks a ledger rule (checked in code before writing).
    #[error(transparent)]
    Rule(#[from] LedgerError),
    /// The transfer would take `account` below zero on its normal side; nothing was applied.
    #[error("insufficient balance on {account}")]
    InsufficientBalance {
        /// The account that would go negative.
        account: String,
    },
    /// The database refused the transfer as unbalanced (the code check was bypassed).
    #[error("database refused unbalanced transfer: {reason}")]
    Unbalanced {
        /// PostgreSQL's message.
        reason: String,
    },
    /// The asset is not in `assets`; call [`ensure_asset`] first.
    #[error("unknown asset {asset}")]
    UnknownAsset {
        /// The asset.
        asset: String,
    },
    /// The asset is recorded with other decimals than an event states.
    #[error("asset {asset} has {recorded} decimals in the ledger, the event says {stated}")]
    DecimalsMismatch {
        /// The asset.
        asset: String,
        /// Decimals in `assets`.
        recorded: u8,
        /// Decimals in the event.
        stated: u8,
    },
    /// A stored row breaks an invariant (negative balance, unknown kind, ...).
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    /// PostgreSQL failed or is unreachable; the transaction is rolled back, retry later.
    #[error("database: {0}")]
    Database(sqlx::Error),
}

impl JournalError {
    /// Whether retrying later may succeed (the database was unavailable or the transaction
    /// lost a race), as opposed to a refusal that will repeat.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(_))
    }

    /// Maps a database error, recognising the ledger's named constraints.
    pub fn from_db(error: sqlx::Error) -> Self {
        let Some(db) = error.as_database_error() else {
            return Self::Database(error);
        };
        match db.constraint() {
            Some("accounts_balance_non_negative") => {
                let detail = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(PgDatabaseError::detail)
                    .map(|account_id| format!("account id {account_id}"));
                Self::InsufficientBalance {
                    account: detail.unwrap_or_else(|| db.message().to_owned()),
                }
            }
            Some("transfers_balanced") => Self::Unbalanced {
                reason: db.message().to_owned(),
            },
            _ => Self::Database(error),
        }
    }
}

impl From<sqlx::Error> for JournalError {
    fn from(error: sqlx::Error) -> Self {
        Self::from_db(error)
    }
}

impl From<NumericError> for JournalError {
    fn from(error: NumericError) -> Self {
        Self::Corrupt(error.to_string())
    }
}

/// Records `asset` with `decimals`, or checks that it is already recorded with them.
///
/// Errors: [`JournalError::DecimalsMismatch`]; [`JournalError::Database`].
pub async fn ensure_asset(
    conn: &mut PgConnection,
    asset: &AssetSymbol,
    decimals: u8,
) -> Result<(), JournalError> {
    sqlx::query(
        "INSERT INTO assets (symbol, decimals) VALUES ($1, $2) ON CONFLICT (symbol) DO NOTHING",
    )
    .bind(asset.as_str())
    .bind(i16::from(decimals))
    .execute(&mut *conn)
    .await?;
    let recorded: i16 = sqlx::query_scalar("SELECT decimals FROM assets WHERE symbol = $1")
        .bind(asset.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let recorded = u8::try_from(recorded)
        .map_err(|_| JournalError::Corrupt(format!("asset {asset} has {recorded} decimals")))?;
    if recorded != decimals {
        return Err(JournalError::DecimalsMismatch {
            asset: asset.to_string(),
            recorded,
            stated: decimals,
        });
    }
    Ok(())
}

/// The id of the account `key`, opening it (at zero) if needed.
///
/// Errors: [`JournalError::UnknownAsset`] if the asset is not recorded;
/// [`JournalError::Database`].
pub async fn ensure_account(
    conn: &mut PgConnection,
    key: &AccountKey,
) -> Result<i64, JournalError> {
    let member = key.owner().member().map(MemberId::as_str);
    let kind = key.kind();
    let owner_type = if kind.is_member_owned() {
        "member"
    } else {
        "platform"
    };
    let inserted: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO accounts (member_id, asset, kind, normal_side, owner_type)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ON CONSTRAINT accounts_key DO NOTHING
         RETURNING id",
    )
    .bind(member)
    .bind(key.asset().as_str())
    .bind(kind.as_str())
    .bind(kind.normal_side().as_str())
    .bind(owner_type)
    .fetch_optional(&mut *conn)
    .await;
    match inserted {
        Ok(Some(id)) => return Ok(id),
        Ok(None) => {}
        Err(error) if is_foreign_key_violation(&error) => {
            return Err(JournalError::UnknownAsset {
                asset: key.asset().to_string(),
            });
        }
        Err(error) => return Err(error.into()),
    }
    let id = sqlx::query_scalar(&format!(
        "SELECT id FROM accounts WHERE {} AND asset = $2 AND kind = $3",
        owner_condition(member)
    ))
    .bind(member)
    .bind(key.asset().as_str())
    .bind(kind.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// The `accounts` condition on the owner bound as `$1` (`NULL` for a platform account),
/// written so the `accounts_key` index is used: `member_id IS NOT DISTINCT FROM $1` is not
/// indexable and scanned the whole table.
pub(crate) fn owner_condition(member: Option<&str>) -> &'static str {
    if member.is_some() {
        "member_id = $1"
    } else {
        "member_id IS NULL AND $1::text IS NULL"
    }
}

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .as_deref()
        == Some("23503")
}

/// Writes `transfer` and its entries, and updates the accounts' balances, inside the
/// caller's transaction. Idempotent on (kind, reference): a second post of the same
/// reference writes nothing and returns [`Posted::AlreadyPosted`]. The database's balance
/// check runs before this returns, so a refused transfer is reported here, not at commit.
///
/// Accounts are opened as needed and locked in id order (no deadlocks between transfers).
/// On error the caller must roll back: part of the transfer may have been written.
///
/// Errors: [`JournalError::InsufficientBalance`] (the balance check, naming the account);
/// [`JournalError::Unbalanced`]; [`JournalError::UnknownAsset`]; [`JournalError::Database`].
pub async fn post(conn: &mut PgConnection, transfer: &Transfer) -> Result<Posted, JournalError> {
    let mut accounts: BTreeMap<&AccountKey, i64> = BTreeMap::new();
    for leg in transfer.legs() {
        if !accounts.contains_key(&leg.account) {
            let id = ensure_account(conn, &leg.account).await?;
            accounts.insert(&leg.account, id);
        }
    }
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO transfers (id, kind, reference) VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT transfers_reference_unique DO NOTHING
         RETURNING id",
    )
    .bind(transfer.id())
    .bind(transfer.kind())
    .bind(transfer.reference())
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        let transfer_id =
            sqlx::query_scalar("SELECT id FROM transfers WHERE kind = $1 AND reference = $2")
                .bind(transfer.kind())
                .bind(transfer.reference())
                .fetch_one(&mut *conn)
                .await?;
        return Ok(Posted::AlreadyPosted { transfer_id });
    }

    let mut entries: Vec<(i64, &AccountKey, BigDecimal)> = transfer
        .legs()
        .iter()
        .map(|leg| {
            (
                accounts[&leg.account],
                &leg.account,
                numeric::bigint_to_numeric(leg.signed_amount()),
            )
        })
        .collect();
    entries.sort_by_key(|(id, _, _)| *id);
    for (account_id, account, amount) in &entries {
        sqlx::query("INSERT INTO entries (transfer_id, account_id, amount) VALUES ($1, $2, $3)")
            .bind(transfer.id())
            .bind(account_id)
            .bind(amount)
            .execute(&mut *conn)
            .await
            .map_err(|error| match JournalError::from_db(error) {
                JournalError::InsufficientBalance { .. } => JournalError::InsufficientBalance {
                    account: account.to_string(),
                },
                other => other,
            })?;
    }
    // Run the deferred balance triggers now, then defer them again for later transfers in
    // the same transaction.
    // (A query without arguments goes over the simple protocol, which allows utility
    // statements and several statements at once.)
    conn.execute(
        "SET CONSTRAINTS transfers_balanced, entries_balanced IMMEDIATE;
         SET CONSTRAINTS transfers_balanced, entries_balanced DEFERRED;",
    )
    .await?;
    Ok(Posted::New {
        transfer_id: transfer.id(),
    })
}

/// One account's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The account.
    pub account: AccountKey,
    /// The asset's decimals (`amount / 10^decimals` whole units).
    pub decimals: u8,
    /// Balance on the account's normal side, in base units (never negative).
    pub amount: BaseUnits,
}

impl Balance {
    /// The amount in whole units, exact, e.g. `"1.5"`.
    pub fn decimal_amount(&self) -> String {
        self.amount.to_decimal_string(self.decimals)
    }
}

const BALANCE_COLUMNS: &str = "SELECT a.member_id, a.asset, a.kind, a.balance, s.decimals
    FROM accounts a JOIN assets s ON s.symbol = a.asset";

/// Every account of `member`, ordered by asset then kind.
///
/// Errors: [`JournalError::Database`]; [`JournalError::Corrupt`] for a row that breaks an
/// invariant.
pub async fn member_balances<'e>(
    executor: impl PgExecutor<'e>,
    member: &MemberId,
) -> Result<Vec<Balance>, JournalError> {
    let rows = sqlx::query(&format!(
        "{BALANCE_COLUMNS} WHERE a.member_id = $1 ORDER BY a.asset, a.id"
    ))
    .bind(member.as_str())
    .fetch_all(executor)
    .await?;
    rows.iter().map(balance_from_row).collect()
}

/// Every platform account (hot wallets, fee revenue), ordered by asset then kind.
///
/// Errors: as [`member_balances`].
pub async fn platform_balances<'e>(
    executor: impl PgExecutor<'e>,
) -> Result<Vec<Balance>, JournalError> {
    let rows = sqlx::query(&format!(
        "{BALANCE_COLUMNS} WHERE a.member_id IS NULL ORDER BY a.asset, a.id"
    ))
    .fetch_all(executor)
    .await?;
    rows.iter().map(balance_from_row).collect()
}

/// The balance of one account, zero if it was never opened.
///
/// Errors: as [`member_balances`].
pub async fn balance<'e>(
    executor: impl PgExecutor<'e>,
    key: &AccountKey,
) -> Result<BaseUnits, JournalError> {
    let member = key.owner().member().map(MemberId::as_str);
    let stored: Option<BigDecimal> = sqlx::query_scalar(&format!(
        "SELECT balance FROM accounts WHERE {} AND asset = $2 AND kind = $3",
        owner_condition(member)
    ))
    .bind(member)
    .bind(key.asset().as_str())
    .bind(key.kind().as_str())
    .fetch_optional(executor)
    .await?;
    match stored {
        Some(stored) => Ok(numeric::from_numeric(&stored)?),
        None => Ok(BaseUnits::zero()),
    }
}

fn balance_from_row(row: &sqlx::postgres::PgRow) -> Result<Balance, JournalError> {
    let account = account_key_from_row(row)?;
    let stored: BigDecimal = row.try_get("balance")?;
    let decimals: i16 = row.try_get("decimals")?;
    let decimals = u8::try_from(decimals)
        .map_err(|e| JournalError::Corrupt(format!("account {account}: decimals {e}")))?;
    Ok(Balance {
        account,
        decimals,
        amount: numeric::from_numeric(&stored)?,
    })
}

/// The account key of an `accounts` row read with its `member_id`, `asset` and `kind`.
///
/// Errors: [`JournalError::Corrupt`] for a stored value the ledger's types refuse.
fn account_key_from_row(row: &sqlx::postgres::PgRow) -> Result<AccountKey, JournalError> {
    let member: Option<String> = row.try_get("member_id")?;
    let asset: String = row.try_get("asset")?;
    let kind: String = row.try_get("kind")?;
    let corrupt =
        |what: String| JournalError::Corrupt(format!("account {member:?}/{asset}/{kind}: {what}"));
    let owner = match &member {
        Some(member) => Owner::Member(member.parse().map_err(corrupt)?),
        None => Owner::Platform,
    };
    let symbol: AssetSymbol = asset
        .parse()
        .map_err(|e: LedgerError| corrupt(e.to_string()))?;
    let kind_parsed: AccountKind = kind
        .parse()
        .map_err(|e: LedgerError| corrupt(e.to_string()))?;
    AccountKey::new(owner, symbol, kind_parsed).map_err(|e| corrupt(e.to_string()))
}

/// A disagreement found by [`audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditFinding {
    /// A transfer whose entries do not sum to zero in `asset`.
    Unbalanced {
        /// The transfer.
        transfer_id: Uuid,
        /// The asset.
        asset: String,
        /// Debits minus credits, base units.
        sum: String,
    },
    /// An account whose cached balance differs from the sum of its entries.
    BalanceDrift {
        /// The account's id.
        account_id: i64,
        /// The account: owner, asset and kind.
        account: AccountKey,
        /// The cached balance.
        cached: String,
        /// The balance its entries give.
        from_entries: String,
    },
}

/// Recomputes every transfer's sum and every account's balance from the entries; an empty
/// result means the journal is consistent. Reads the whole journal: for tests and operators.
///
/// Errors: [`JournalError::Database`].
pub async fn audit(conn: &mut PgConnection) -> Result<Vec<AuditFinding>, JournalError> {
    let mut findings = Vec::new();
    let unbalanced = sqlx::query(
        "SELECT e.transfer_id, a.asset, sum(e.amount)::text AS sum
           FROM entries e JOIN accounts a ON a.id = e.account_id
          GROUP BY e.transfer_id, a.asset HAVING sum(e.amount) <> 0",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in unbalanced {
        findings.push(AuditFinding::Unbalanced {
            transfer_id: row.try_get("transfer_id")?,
            asset: row.try_get("asset")?,
            sum: row.try_get("sum")?,
        });
    }
    let drift = sqlx::query(
        "SELECT a.id, a.member_id, a.asset, a.kind, a.balance::text AS cached,
                (CASE a.normal_side WHEN 'debit' THEN 1 ELSE -1 END
                  * coalesce(sum(e.amount), 0))::text AS from_entries
           FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
          GROUP BY a.id
         HAVING a.balance <> CASE a.normal_side WHEN 'debit' THEN 1 ELSE -1 END
                              * coalesce(sum(e.amount), 0)",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in drift {
        findings.push(AuditFinding::BalanceDrift {
            account_id: row.try_get("id")?,
            account: account_key_from_row(&row)?,
            cached: row.try_get("cached")?,
            from_entries: row.try_get("from_entries")?,
        });
    }
    Ok(findings)
}

/// What [`audit_snapshot`] checked, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Transfers in the journal, each checked to sum to zero per asset.
    pub transfers: i64,
    /// Entries summed.
    pub entries: i64,
    /// Accounts whose balance was recomputed from their entries.
    pub accounts: i64,
    /// The disagreements; empty when the journal is consistent.
    pub findings: Vec<AuditFinding>,
}

/// [`audit`] in one read-only `REPEATABLE READ` transaction, so that its two checks and the
/// counts see the same journal while settlements go on; `coinhub-exchange audit` runs it.
/// Reads every entry twice (a full scan of `entries` per check).
///
/// Errors: [`JournalError::Database`].
pub async fn audit_snapshot(pool: &PgPool) -> Result<AuditReport, JournalError> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let (transfers, entries, accounts): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries),
                (SELECT count(*) FROM accounts)",
    )
    .fetch_one(&mut *tx)
    .await?;
    let findings = audit(&mut tx).await?;
    tx.commit().await?;
    Ok(AuditReport {
        transfers,
        entries,
        accounts,
        findings,
    })
}
