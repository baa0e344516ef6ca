//! Payouts: the transactions that pay withdrawals, and their attempts (the signed original
//! and its fee replacements). Shared by the UTXO and EVM engines; every function changes the
//! payout, its withdrawals and their `withdrawal.*` events in one database transaction.

use bigdecimal::BigDecimal;
use coinhub_events::{BaseUnits, WithdrawalEventKind, numeric};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::store::{self, COLUMNS, EventDetails, WithdrawalRow};

/// A signed transaction to store before it is broadcast.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// Its transaction id (UTXO: RPC byte order hex; EVM: `0x` hash).
    pub txid: String,
    /// The serialized signed transaction.
    pub raw_tx: Vec<u8>,
    /// UTXO: the fee in satoshi/duff; EVM: gas limit × max fee per gas, in wei.
    pub fee: u128,
    /// UTXO: sat/kvB; EVM: max fee per gas in wei.
    pub fee_rate: u128,
    /// UTXO: the change output `(vout, amount in satoshi, change index)`.
    pub change: Option<(u32, u64, u32)>,
}

/// A new payout: one transaction paying `withdrawals` (all `requested`, all of `chain`).
#[derive(Debug, Clone)]
pub struct NewPayout {
    /// The chain.
    pub chain: String,
    /// The asset paid.
    pub asset: String,
    /// The withdrawals it pays.
    pub withdrawals: Vec<Uuid>,
    /// EVM: the Safe nonce.
    pub safe_nonce: Option<u64>,
    /// EVM: the executor's nonce.
    pub executor_nonce: Option<u64>,
    /// UTXO: the spend plan, to bump the fee later.
    pub plan: Option<serde_json::Value>,
    /// The first signed transaction.
    pub attempt: NewAttempt,
}

/// Allocates the next value of counter `name` (`change_index`, `safe_nonce`,
/// `executor_nonce`) of `chain` inside `tx`, never below `floor` (EVM: the chain's current
/// nonce, so a nonce used outside coinhubd is skipped rather than signed twice). The row lock
/// is held until `tx` ends, so two engines never get the same value, and a rolled-back
/// transaction gives its value back.
///
/// Errors: the database's.
pub async fn allocate(
    tx: &mut Transaction<'_, Postgres>,
    chain: &str,
    name: &str,
    floor: u64,
) -> anyhow::Result<u64> {
    let floor = i64::try_from(floor)?;
    let value: i64 = sqlx::query_scalar(
        "INSERT INTO wallet_counters (chain, name, next) VALUES ($1, $2, $3 + 1)
         ON CONFLICT (chain, name) DO UPDATE SET next = GREATEST(wallet_counters.next, $3) + 1
         RETURNING next - 1",
    )
    .bind(chain)
    .bind(name)
    .bind(floor)
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(value)?)
}

async fn insert_attempt(
    tx: &mut Transaction<'_, Postgres>,
    payout_id: i64,
    attempt: i32,
    new: &NewAttempt,
) -> anyhow::Result<()> {
    let (change_vout, change_amount, change_index) = match new.change {
        Some((vout, amount, index)) => (
            Some(i32::try_from(vout)?),
            Some(BigDecimal::from(amount)),
            Some(i32::try_from(index)?),
        ),
        None => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO payout_attempts (payout_id, attempt, txid, raw_tx, fee, fee_rate,
             change_vout, change_amount, change_index)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(payout_id)
    .bind(attempt)
    .bind(&new.txid)
    .bind(&new.raw_tx)
    .bind(numeric::to_numeric(&BaseUnits::from(new.fee)))
    .bind(numeric::to_numeric(&BaseUnits::from(new.fee_rate)))
    .bind(change_vout)
    .bind(change_amount)
    .bind(change_index)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores a fully signed payout inside `tx` (the caller may have allocated nonces or a change
/// index in it, and records UTXO inputs with [`reserve_inputs`]): the payout (`signed`), its
/// attempt 0, and every withdrawal moved from `requested` to `signed` with
/// `withdrawal.signed`. Returns the payout id.
///
/// Errors: a withdrawal that is no longer `requested` (cancelled meanwhile: the caller rolls
/// back and nothing is broadcast); the database's.
pub async fn record_signed(
    tx: &mut Transaction<'_, Postgres>,
    payout: &NewPayout,
) -> anyhow::Result<i64> {
    let as_i64 = |n: Option<u64>| n.map(i64::try_from).transpose();
    let payout_id: i64 = sqlx::query_scalar(
        "INSERT INTO payouts (chain, asset, status, safe_nonce, executor_nonce, plan)
         VALUES ($1, $2, 'signed', $3, $4, $5) RETURNING payout_id",
    )
    .bind(&payout.chain)
    .bind(&payout.asset)
    .bind(as_i64(payout.safe_nonce)?)
    .bind(as_i64(payout.executor_nonce)?)
    .bind(&payout.plan)
    .fetch_one(&mut **tx)
    .await?;
    insert_attempt(tx, payout_id, 0, &payout.attempt).await?;
    let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
        "UPDATE withdrawals SET status = 'signed', payout_id = $2, updated_at = now()
         WHERE withdrawal_id = ANY($1) AND status = 'requested' RETURNING {COLUMNS}"
    ))
    .bind(&payout.withdrawals)
    .bind(payout_id)
    .fetch_all(&mut **tx)
    .await?;
    anyhow::ensure!(
        rows.len() == payout.withdrawals.len(),
        "a withdrawal of the payout is no longer requested (cancelled?)"
    );
    let shares = fee_shares(payout.attempt.fee, rows.len());
    for (row, fee) in rows.iter().zip(shares) {
        let details = EventDetails {
            txid: Some(payout.attempt.txid.clone()),
            fee: Some(BaseUnits::from(fee)),
            fee_asset: None,
            ..EventDetails::default()
        };
        store::emit(tx, row, WithdrawalEventKind::Signed, details).await?;
    }
    Ok(payout_id)
}

/// Records the outpoints a UTXO payout spends, inside `tx`.
///
/// Errors: an outpoint already spent by another payout (the primary key refuses it: never
/// two payouts from one UTXO); the database's.
pub async fn reserve_inputs(
    tx: &mut Transaction<'_, Postgres>,
    chain: &str,
    payout_id: i64,
    outpoints: &[(String, u32)],
) -> anyhow::Result<()> {
    for (txid, vout) in outpoints {
        sqlx::query(
            "INSERT INTO payout_inputs (chain, txid, vout, payout_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(chain)
        .bind(txid)
        .bind(i32::try_from(*vout)?)
        .bind(payout_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Splits `total` into `parts` shares: equal, the remainder to the first.
pub fn fee_shares(total: u128, parts: usize) -> Vec<u128> {
    let Ok(count) = u128::try_from(parts) else {
        return Vec::new();
    };
    if count == 0 {
        return Vec::new();
    }
    let share = total / count;
    let mut shares = vec![share; parts];
    shares[0] += total % count;
    shares
}

/// A stored attempt of an open payout.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    /// 0, 1, ...
    pub attempt: i32,
    /// Its transaction id.
    pub txid: String,
    /// The signed transaction.
    pub raw_tx: Vec<u8>,
    /// Its fee (see [`NewAttempt::fee`]).
    pub fee: BigDecimal,
    /// Its fee rate (see [`NewAttempt::fee_rate`]).
    pub fee_rate: BigDecimal,
    /// UTXO change vout.
    pub change_vout: Option<i32>,
    /// UTXO change amount.
    pub change_amount: Option<BigDecimal>,
    /// UTXO change index.
    pub change_index: Option<i32>,
    /// When it was stored.
    pub created_at: OffsetDateTime,
    /// When it was first broadcast.
    pub broadcast_at: Option<OffsetDateTime>,
}

/// A payout that is `signed` or `broadcast`.
#[derive(Debug, Clone)]
pub struct OpenPayout {
    /// Its id.
    pub payout_id: i64,
    /// The asset paid.
    pub asset: String,
    /// `signed` or `broadcast`.
    pub status: String,
    /// EVM nonces.
    pub safe_nonce: Option<i64>,
    /// EVM executor nonce.
    pub executor_nonce: Option<i64>,
    /// UTXO spend plan of the latest attempt.
    pub plan: Option<serde_json::Value>,
    /// Chain height when first broadcast.
    pub broadcast_height: Option<i64>,
    /// Its attempts, oldest first; the last one is current.
    pub attempts: Vec<Attempt>,
}

impl OpenPayout {
    /// The latest attempt (there is always one).
    pub fn current(&self) -> &Attempt {
        self.attempts
            .last()
            .expect("a payout has at least one attempt")
    }
}

/// The open payouts of `chain`, oldest first.
///
/// Errors: the database's.
pub async fn open_payouts(pool: &PgPool, chain: &str) -> anyhow::Result<Vec<OpenPayout>> {
    type Row = (
        i64,
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<serde_json::Value>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT payout_id, asset, status, safe_nonce, executor_nonce, plan, broadcast_height
         FROM payouts WHERE chain = $1 AND status IN ('signed', 'broadcast') ORDER BY payout_id",
    )
    .bind(chain)
    .fetch_all(pool)
    .await?;
    let mut payouts = Vec::with_capacity(rows.len());
    for (payout_id, asset, status, safe_nonce, executor_nonce, plan, broadcast_height) in rows {
        let attempts = sqlx::query_as(
            "SELECT attempt, txid, raw_tx, fee, fee_rate, change_vout, change_amount,
                    change_index, created_at, broadcast_at
             FROM payout_attempts WHERE payout_id = $1 ORDER BY attempt",
        )
        .bind(payout_id)
        .fetch_all(pool)
        .await?;
        payouts.push(OpenPayout {
            payout_id,
            asset,
            status,
            safe_nonce,
            executor_nonce,
            plan,
            broadcast_height,
            attempts,
        });
    }
    Ok(payouts)
}

/// Stores a replacement (higher fee, same inputs or nonce) as the payout's next attempt,
/// before it is broadcast; `plan` replaces the stored UTXO plan. Returns its number.
///
/// Errors: the database's.
pub async fn add_attempt(
    pool: &PgPool,
    payout_id: i64,
    new: &NewAttempt,
    plan: Option<serde_json::Value>,
) -> anyhow::Result<i32> {
    let mut tx = pool.begin().await?;
    let next: i32 = sqlx::query_scalar(
        "SELECT COALESCE(max(attempt), -1) + 1 FROM payout_attempts WHERE payout_id = $1",
    )
    .bind(payout_id)
    .fetch_one(&mut *tx)
    .await?;
    insert_attempt(&mut tx, payout_id, next, new).await?;
    sqlx::query(
        "UPDATE payouts SET plan = COALESCE($2, plan), updated_at = now() WHERE payout_id = $1",
    )
    .bind(payout_id)
    .bind(plan)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// Records that attempt number `attempt` (transaction `txid`) of the payout was accepted by
/// the node, at chain height `height`. The first time: `signed → broadcast` for the payout and
/// its withdrawals, with `withdrawal.broadcast`; the height where the confirmation tracker
/// starts looking stays the one stored at signing (the transaction may have been mined before
/// a crash let us record the broadcast). Idempotent.
///
/// Errors: the database's.
pub async fn mark_broadcast(
    pool: &PgPool,
    payout_id: i64,
    attempt: i32,
    txid: &str,
    height: u64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE payout_attempts SET broadcast_at = COALESCE(broadcast_at, now())
         WHERE payout_id = $1 AND attempt = $2",
    )
    .bind(payout_id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    let first = sqlx::query(
        "UPDATE payouts SET status = 'broadcast',
             broadcast_height = COALESCE(broadcast_height, $2), updated_at = now()
         WHERE payout_id = $1 AND status = 'signed'",
    )
    .bind(payout_id)
    .bind(i64::try_from(height)?)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if first {
        let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
            "UPDATE withdrawals SET status = 'broadcast', updated_at = now()
             WHERE payout_id = $1 AND status = 'signed' RETURNING {COLUMNS}"
        ))
        .bind(payout_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let details = EventDetails {
                txid: Some(txid.to_owned()),
                ..EventDetails::default()
            };
            store::emit(&mut tx, row, WithdrawalEventKind::Broadcast, details).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Where and how a payout was mined.
#[derive(Debug, Clone)]
pub struct Mined {
    /// The attempt that was mined.
    pub attempt: i32,
    /// Its transaction id.
    pub txid: String,
    /// Block height.
    pub height: u64,
    /// Block hash.
    pub hash: String,
    /// The fee actually paid, base units of the chain's native asset.
    pub fee: u128,
    /// The chain's native asset (what the fee is paid in).
    pub fee_asset: String,
}

/// Confirms a payout: the payout and its withdrawals become `confirmed` (each with its fee
/// share and `withdrawal.confirmed`), and a UTXO attempt's change output becomes spendable.
/// Idempotent (a confirmed payout is left alone).
///
/// Errors: the database's.
pub async fn confirm(
    pool: &PgPool,
    chain: &str,
    payout_id: i64,
    mined: &Mined,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE payouts SET status = 'confirmed', mined_attempt = $2, block_height = $3,
             block_hash = $4, updated_at = now()
         WHERE payout_id = $1 AND status IN ('signed', 'broadcast')",
    )
    .bind(payout_id)
    .bind(mined.attempt)
    .bind(i64::try_from(mined.height)?)
    .bind(&mined.hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO wallet_change (chain, txid, vout, amount, change_index, payout_id)
         SELECT $1, txid, change_vout, change_amount, change_index, payout_id
         FROM payout_attempts
         WHERE payout_id = $2 AND attempt = $3 AND change_vout IS NOT NULL",
    )
    .bind(chain)
    .bind(payout_id)
    .bind(mined.attempt)
    .execute(&mut *tx)
    .await?;
    let mut rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM withdrawals WHERE payout_id = $1 AND status <> 'failed'
         ORDER BY withdrawal_id"
    ))
    .bind(payout_id)
    .fetch_all(&mut *tx)
    .await?;
    let shares = fee_shares(mined.fee, rows.len());
    for (row, fee) in rows.iter_mut().zip(shares) {
        let fee_numeric = numeric::to_numeric(&BaseUnits::from(fee));
        sqlx::query(
            "UPDATE withdrawals SET status = 'confirmed', fee = $2, updated_at = now()
             WHERE withdrawal_id = $1",
        )
        .bind(row.withdrawal_id)
        .bind(&fee_numeric)
        .execute(&mut *tx)
        .await?;
        row.status = "confirmed".to_owned();
        let details = EventDetails {
            txid: Some(mined.txid.clone()),
            fee: Some(BaseUnits::from(fee)),
            fee_asset: Some(mined.fee_asset.clone()),
            block_height: Some(mined.height),
            reason: None,
        };
        store::emit(&mut tx, row, WithdrawalEventKind::Confirmed, details).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The `requested` withdrawals of `chain` (and `asset`, if given), oldest first, at most
/// `limit`.
///
/// Errors: the database's.
pub async fn requested(
    pool: &PgPool,
    chain: &str,
    asset: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<WithdrawalRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM withdrawals
         WHERE chain = $1 AND status = 'requested' AND ($2::text IS NULL OR asset = $2)
         ORDER BY received_at, withdrawal_id LIMIT $3"
    ))
    .bind(chain)
    .bind(asset)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Withdrawals of `chain` per status, for the `coinhub_withdrawals` gauge.
///
/// Errors: the database's.
pub async fn status_counts(pool: &PgPool, chain: &str) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT status, count(*) FROM withdrawals WHERE chain = $1 GROUP BY status")
            .bind(chain)
            .fetch_all(pool)
            .await?,
    )
}

/// Records one engine round in the metrics: a failure, and the withdrawals per status.
pub async fn report_round(
    pool: &PgPool,
    metrics: &crate::metrics::Metrics,
    chain: &str,
    outcome: &anyhow::Result<()>,
) {
    if let Err(error) = outcome {
        metrics
            .payout_round_errors
            .with_label_values(&[chain])
            .inc();
        tracing::warn!(%chain, error = format!("{error:#}"), "withdrawal round failed");
    }
    if let Ok(counts) = status_counts(pool, chain).await {
        for status in ["requested", "signed", "broadcast", "confirmed", "failed"] {
            let count = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            metrics
                .withdrawals
                .with_label_values(&[chain, status])
                .set(count);
        }
    }
}

/// Fails a `requested` withdrawal that cannot be paid (refused before signing).
///
/// Errors: the database's.
pub async fn refuse(pool: &PgPool, withdrawal_id: Uuid, reason: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    store::fail_requested(&mut tx, withdrawal_id, reason, None).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fee_shares;

    #[test]
    fn fee_shares_add_up_with_the_remainder_first() {
        assert_eq!(fee_shares(10, 3), vec![4, 3, 3]);
        assert_eq!(fee_shares(7, 1), vec![7]);
        assert!(fee_shares(7, 0).is_empty());
        assert_eq!(fee_shares(0, 2), vec![0, 0]);
    }
}
