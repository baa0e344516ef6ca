//! An account's statement: its journal entries, newest first, each with the transfer it
//! belongs to and the account's running balance after it. What an operator reads to explain
//! a balance (`coinhub-exchange statement`).
//!
//! The running balances are worked back from the account's balance, exactly (integers of
//! base units, no floats): the newest listed entry's is the balance less the changes of the
//! entries after the page (none on the first page), and each older one's is the next one's
//! less that entry's change. The balance and the entries are read in one snapshot
//! (`REPEATABLE READ`, read only), so they agree while transfers are being written.
//!
//! Entries are listed in journal order (entry id). Ids are drawn when entries are written,
//! and a trade settlement writes its entries before it waits for the batch ahead (another
//! market's, or a deposit) to release the accounts (migration 0016), so two transfers that
//! were being written at the same time may have committed in the other order. The running
//! balance between them is then one the account never had, and can even be below zero
//! (hence signed); the newest is the balance, and before the account's first entry it is
//! zero. That last one is checked: anything else means the cached balance and the entries
//! disagree, refused as [`JournalError::Corrupt`] (`journal::audit` then names the account).
//!
//! A trade settlement's entry is the net of a whole batch of trades on the account
//! (`trading::store`), its reference naming the market and the batch's commands.
//!
//! Cost: entries are found through the `entries_account_id` index (migration 0001), which
//! keeps an account's entries in no useful order for a newest-first page, so a page reads
//! every entry the account ever had (77 ms for an account with ~10,000 entries, `psql`, cold
//! cache; a busy member gets one a batch it trades in). An index that reads only the page
//! costs every settlement instead: a B-tree on (account_id, id) made the entries' `INSERT`
//! 1.0–1.6 ms slower for 800 entries, a BRIN on `id` 0.7–0.9 ms (PostgreSQL 15 looks each
//! insert's block range up in it), ~1–2 µs a trade, for a read operators make now and then
//! (docs/benchmarks.md, 2026-12-08).

use bigdecimal::num_bigint::{BigInt, Sign};
use coinhub_events::BaseUnits;
use coinhub_events::numeric;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::journal::JournalError;
use crate::ledger::{AccountKey, Side};

/// Most entries one [`read`] returns.
pub const LIMIT_MAX: u32 = 1_000;

/// A page of an account's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The account.
    pub account: AccountKey,
    /// The asset's decimals (`amount / 10^decimals` whole units).
    pub decimals: u8,
    /// The account's balance at the read's snapshot, base units on its normal side.
    pub balance: BaseUnits,
    /// Newest first, at most the `limit` asked for.
    pub lines: Vec<StatementLine>,
    /// Whether entries older than the last line exist: pass the last line's `entry_id` as
    /// `before` to read them.
    pub more: bool,
}

/// One journal entry of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The entry's id (`entries.id`): journal order.
    pub entry_id: i64,
    /// Its transfer (`transfers.id`).
    pub transfer_id: Uuid,
    /// The transfer's kind, e.g. `deposit`, `withdrawal_lock`, `trade_settlement`.
    pub transfer_kind: String,
    /// The transfer's reference (unique per kind), e.g. a deposit's id.
    pub reference: String,
    /// When the transfer was written (`transfers.created_at`).
    pub posted_at: OffsetDateTime,
    /// Debit or credit. The balance grows when this is the account kind's normal side
    /// ([`crate::ledger::AccountKind::normal_side`]: credit for members' accounts).
    pub side: Side,
    /// The entry's amount, base units of the account's asset (never zero).
    pub amount: BaseUnits,
    /// The account's running balance right after this entry in journal order, base units on
    /// its normal side; below zero only where concurrent transfers committed out of journal
    /// order (see the module's documentation).
    pub balance_after: BigInt,
}

/// Up to `limit` (taken as 1 when 0, as [`LIMIT_MAX`] when above it) of `account`'s entries
/// with an id below `before` (all when `None`), newest first, with the balance after each.
/// `Ok(None)`: no such account (accounts are opened by their first transfer).
///
/// Errors: [`JournalError::Corrupt`] when the cached balance and the entries disagree (the
/// balance worked back to anything but zero before the account's first entry; checked on
/// the page that reaches it) or a stored value breaks an invariant; [`JournalError::Database`].
pub async fn read(
    pool: &PgPool,
    account: &AccountKey,
    before: Option<i64>,
    limit: u32,
) -> Result<Option<Statement>, JournalError> {
    let limit = limit.clamp(1, LIMIT_MAX);
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let member = account.owner().member().map(|member| member.as_str());
    // (`member_id` is only a column of `accounts`, so the condition needs no alias.)
    let found = sqlx::query(&format!(
        "SELECT a.id, a.balance::text AS balance, s.decimals
           FROM accounts a JOIN assets s ON s.symbol = a.asset
          WHERE {} AND a.asset = $2 AND a.kind = $3",
        crate::journal::owner_condition(member)
    ))
    .bind(member)
    .bind(account.asset().as_str())
    .bind(account.kind().as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    let account_id: i64 = found.try_get("id")?;
    let balance: BaseUnits = parse_units(&found.try_get::<String, _>("balance")?)?;
    let decimals = u8::try_from(found.try_get::<i16, _>("decimals")?)
        .map_err(|e| JournalError::Corrupt(format!("{account}: decimals {e}")))?;
    // Debits minus credits of the entries newer than the page.
    let later: BigInt = match before {
        None => BigInt::ZERO,
        Some(before) => parse_signed(
            &sqlx::query_scalar::<_, String>(
                "SELECT coalesce(sum(amount), 0)::text FROM entries
                  WHERE account_id = $1 AND id >= $2",
            )
            .bind(account_id)
            .bind(before)
            .fetch_one(&mut *tx)
            .await?,
        )?,
    };
    let rows = sqlx::query(
        "SELECT e.id, e.amount::text AS amount, t.id AS transfer_id, t.kind, t.reference,
                t.created_at
           FROM entries e JOIN transfers t ON t.id = e.transfer_id
          WHERE e.account_id = $1 AND ($2::bigint IS NULL OR e.id < $2)
          ORDER BY e.id DESC
          LIMIT $3",
    )
    .bind(account_id)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    // An entry's amount is stored debit-positive; `normal` turns it into the change of the
    // balance on the account's normal side.
    let normal = |debits_minus_credits: BigInt| match account.kind().normal_side() {
        Side::Debit => debits_minus_credits,
        Side::Credit => -debits_minus_credits,
    };
    let more = rows.len() > limit as usize;
    let mut after = numeric::to_bigint(&balance) - normal(later);
    let mut lines = Vec::with_capacity(rows.len().min(limit as usize));
    for row in rows.iter().take(limit as usize) {
        let entry_id: i64 = row.try_get("id")?;
        let amount = parse_signed(&row.try_get::<String, _>("amount")?)?;
        let balance_after = after.clone();
        after -= normal(amount.clone());
        let (side, magnitude) = if amount.sign() == Sign::Minus {
            (Side::Credit, -amount)
        } else {
            (Side::Debit, amount)
        };
        lines.push(StatementLine {
            entry_id,
            transfer_id: row.try_get("transfer_id")?,
            transfer_kind: row.try_get("kind")?,
            reference: row.try_get("reference")?,
            posted_at: row.try_get("created_at")?,
            side,
            amount: parse_units(&magnitude.to_string())?,
            balance_after,
        });
    }
    // Before the account's first entry (or with no entry at all) the balance is zero:
    // accounts open at zero (migration 0023).
    if !more && after != BigInt::ZERO {
        let place = match lines.last() {
            Some(oldest) => format!("before its first entry {}", oldest.entry_id),
            None => "with no entries".to_owned(),
        };
        return Err(JournalError::Corrupt(format!(
            "{account}: its balance and its entries disagree (worked back to {after} {place}); \
             run `coinhub-exchange audit`"
        )));
    }
    Ok(Some(Statement {
        account: account.clone(),
        decimals,
        balance,
        lines,
        more,
    }))
}

fn parse_units(text: &str) -> Result<BaseUnits, JournalError> {
    text.parse()
        .map_err(|e| JournalError::Corrupt(format!("amount {text:?}: {e}")))
}

fn parse_signed(text: &str) -> Result<BigInt, JournalError> {
    text.parse()
        .map_err(|e| JournalError::Corrupt(format!("amount {text:?}: {e}")))
}
