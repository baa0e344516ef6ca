//! The PostgreSQL [`FollowerStore`] of one chain: connected blocks, deposits and their
//! events, each step in one transaction.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use alloy::primitives::{Address, U256};
use bigdecimal::BigDecimal;
use coinhub_chains::bitcoin::source::ScriptWatchlist;
use coinhub_chains::evm::Watchlist;
use coinhub_chains::follower::{FollowerStore, StoreError};
use coinhub_chains::{BlockHash, BlockRef, Recipient, Transfer};
use coinhub_events::numeric;
use coinhub_events::topology::EVENTS_EXCHANGE;
use coinhub_events::{BaseUnits, DepositEvent, DepositEventKind, SCHEMA_VERSION};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::outbox;

/// What the store needs to know of one asset.
#[derive(Debug, Clone)]
pub struct AssetRules {
    /// Decimals of the asset.
    pub decimals: u8,
    /// Confirmations (including the deposit's block) before `confirmed`.
    pub confirmations_min: u32,
    /// Deposits below this many base units are recorded as `ignored`.
    pub deposit_min: U256,
}

/// The set a chain's source matches transfers against, filled from `deposit_addresses`.
#[derive(Clone)]
pub enum ChainWatchlist {
    /// EVM: addresses.
    Evm(Arc<Watchlist>),
    /// Bitcoin, Dash: scriptPubKeys.
    Utxo(Arc<ScriptWatchlist>),
}

/// UTXO look-ahead: receive scripts past the highest issued index that are watched too.
pub struct Lookahead {
    /// How many indices past the highest issued one.
    pub window: u32,
    /// The receive scriptPubKey at an index.
    pub derive: Box<dyn Fn(u32) -> anyhow::Result<Vec<u8>> + Send + Sync>,
}

/// The store of one chain's watcher.
pub struct PgChainStore {
    pool: PgPool,
    chain: String,
    /// Assets of this chain by upper-case symbol.
    assets: BTreeMap<String, AssetRules>,
    reorg_depth_max: u32,
    watchlist: ChainWatchlist,
    /// Highest `deposit_addresses.id` already in the watchlist.
    watched_up_to: AtomicI64,
    /// UTXO chains: the look-ahead window.
    lookahead: Option<Lookahead>,
    /// Highest derivation index issued so far (-1: none).
    issued_max: AtomicI64,
    /// Highest index whose script the look-ahead has added (-1: none).
    lookahead_up_to: AtomicI64,
}

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError(Box::new(error))
}

/// A deposit row as the events need it.
#[derive(sqlx::FromRow)]
struct DepositRow {
    deposit_id: Uuid,
    txid: String,
    idx: i32,
    asset: String,
    member_id: String,
    address: String,
    amount: BigDecimal,
    decimals: i16,
    block_height: i64,
    block_hash: String,
}

const DEPOSIT_COLUMNS: &str =
    "deposit_id, txid, idx, asset, member_id, address, amount, decimals, block_height, block_hash";

impl PgChainStore {
    /// A store for `chain` with its assets' rules; `watchlist` is filled from
    /// `deposit_addresses` by [`FollowerStore::refresh_watchlist`].
    pub fn new(
        pool: PgPool,
        chain: String,
        assets: BTreeMap<String, AssetRules>,
        reorg_depth_max: u32,
        watchlist: ChainWatchlist,
    ) -> Self {
        Self {
            pool,
            chain,
            assets,
            reorg_depth_max,
            watchlist,
            watched_up_to: AtomicI64::new(0),
            lookahead: None,
            issued_max: AtomicI64::new(-1),
            lookahead_up_to: AtomicI64::new(-1),
        }
    }

    /// Also watches `lookahead.window` receive scripts past the highest issued index.
    pub fn with_lookahead(mut self, lookahead: Lookahead) -> Self {
        self.lookahead = Some(lookahead);
        self
    }

    /// Adds the look-ahead scripts up to `issued_max + window` that are not watched yet.
    fn extend_lookahead(&self, watchlist: &ScriptWatchlist) -> Result<(), StoreError> {
        let Some(lookahead) = &self.lookahead else {
            return Ok(());
        };
        let wanted = self.issued_max.load(Ordering::Acquire) + i64::from(lookahead.window);
        let from = self.lookahead_up_to.load(Ordering::Acquire) + 1;
        for index in from..=wanted {
            let index = u32::try_from(index).map_err(store_error)?;
            let script = (lookahead.derive)(index).map_err(|e| StoreError(e.into()))?;
            watchlist.extend([script]);
        }
        self.lookahead_up_to.fetch_max(wanted, Ordering::AcqRel);
        Ok(())
    }

    /// Records a payment to a watched script that no member was given (a look-ahead
    /// address): kept for an operator, never credited automatically.
    async fn record_unassigned(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        block: &BlockRef,
        transfer: &Transfer,
        script: &[u8],
    ) -> Result<(), StoreError> {
        tracing::error!(chain = %self.chain, txid = %transfer.txid, index = transfer.index,
            amount = %transfer.amount, "payment to a look-ahead address that no member was given; recorded in unassigned_deposits");
        let amount = numeric::to_numeric(
            &BaseUnits::from_str(&transfer.amount.to_string()).map_err(store_error)?,
        );
        sqlx::query(
            "INSERT INTO unassigned_deposits (chain, txid, idx, script_pubkey, asset, amount, block_height, block_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&self.chain)
        .bind(&transfer.txid)
        .bind(i32::try_from(transfer.index).map_err(store_error)?)
        .bind(script)
        .bind(&transfer.asset)
        .bind(amount)
        .bind(i64::try_from(block.height).map_err(store_error)?)
        .bind(block.hash.as_str())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    fn event(
        &self,
        row: &DepositRow,
        kind: DepositEventKind,
        confirmations: u64,
        was_confirmed: bool,
    ) -> Result<DepositEvent, StoreError> {
        let invalid = |what: String| StoreError(what.into());
        Ok(DepositEvent {
            version: SCHEMA_VERSION,
            id: Uuid::new_v4(),
            event: kind,
            occurred_at: OffsetDateTime::now_utc(),
            deposit_id: row.deposit_id,
            chain: self.chain.clone(),
            asset: row.asset.clone(),
            member: row.member_id.parse().map_err(invalid)?,
            address: row.address.clone(),
            txid: row.txid.clone(),
            index: u32::try_from(row.idx).map_err(|e| invalid(e.to_string()))?,
            amount: numeric::from_numeric(&row.amount)
                .map_err(|e| invalid(format!("stored amount: {e}")))?,
            decimals: u8::try_from(row.decimals).map_err(|e| invalid(e.to_string()))?,
            block_height: u64::try_from(row.block_height).map_err(|e| invalid(e.to_string()))?,
            block_hash: row.block_hash.clone(),
            confirmations,
            was_confirmed,
        })
    }

    async fn emit(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        row: &DepositRow,
        kind: DepositEventKind,
        confirmations: u64,
        was_confirmed: bool,
    ) -> Result<(), StoreError> {
        let event = self.event(row, kind, confirmations, was_confirmed)?;
        outbox::enqueue(tx, EVENTS_EXCHANGE, kind.routing_key(), event.id, &event)
            .await
            .map_err(store_error)
    }

    /// Inserts (or revives, if it was orphaned) the deposit of `transfer` in `block`;
    /// returns the row when it is new or revived and `detected`.
    async fn upsert_deposit(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        block: &BlockRef,
        transfer: &Transfer,
    ) -> Result<Option<DepositRow>, StoreError> {
        let Some(rules) = self.assets.get(&transfer.asset) else {
            return Err(StoreError(
                format!("source reported unknown asset {}", transfer.asset).into(),
            ));
        };
        // The address text comes from what we handed out (UTXO sources only know the script).
        let owner: Option<(String, String)> = match &transfer.recipient {
            Recipient::Address(address) => sqlx::query_as(
                "SELECT member_id, address FROM deposit_addresses WHERE chain = $1 AND address = $2",
            )
            .bind(&self.chain)
            .bind(address),
            Recipient::Script(script) => sqlx::query_as(
                "SELECT member_id, address FROM deposit_addresses WHERE chain = $1 AND script_pubkey = $2",
            )
            .bind(&self.chain)
            .bind(script),
        }
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
        let Some((member, address)) = owner else {
            match &transfer.recipient {
                Recipient::Script(script) => {
                    self.record_unassigned(tx, block, transfer, script).await?
                }
                Recipient::Address(address) => tracing::error!(chain = %self.chain, %address,
                    txid = %transfer.txid, "transfer to a watched address that is no issued deposit address"),
            }
            return Ok(None);
        };
        let status = if transfer.amount < rules.deposit_min {
            "ignored"
        } else {
            "detected"
        };
        let amount = BaseUnits::from_str(&transfer.amount.to_string()).map_err(store_error)?;
        let amount = numeric::to_numeric(&amount);
        let deposit_id = DepositEvent::deposit_id_for(&self.chain, &transfer.txid, transfer.index);
        let row: Option<DepositRow> = sqlx::query_as(&format!(
            "INSERT INTO deposits (deposit_id, chain, txid, idx, asset, member_id, address, amount,
                 decimals, block_height, block_hash, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (chain, txid, idx) DO UPDATE
                 SET status = EXCLUDED.status, block_height = EXCLUDED.block_height,
                     block_hash = EXCLUDED.block_hash, orphaned_at = NULL, detected_at = now()
                 WHERE deposits.status = 'orphaned'
             RETURNING {DEPOSIT_COLUMNS}"
        ))
        .bind(deposit_id)
        .bind(&self.chain)
        .bind(&transfer.txid)
        .bind(i32::try_from(transfer.index).map_err(store_error)?)
        .bind(&transfer.asset)
        .bind(&member)
        .bind(&address)
        .bind(amount)
        .bind(i16::from(rules.decimals))
        .bind(i64::try_from(block.height).map_err(store_error)?)
        .bind(block.hash.as_str())
        .bind(status)
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
        if status == "ignored" {
            tracing::info!(chain = %self.chain, txid = %transfer.txid, amount = %transfer.amount,
                "deposit below deposit_min recorded as ignored");
            return Ok(None);
        }
        Ok(row)
    }

    /// Confirms every `detected` deposit that has reached its asset's `confirmations_min`
    /// with `tip_height` as the best block.
    async fn confirm_deposits(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tip_height: u64,
    ) -> Result<(), StoreError> {
        let tip = i64::try_from(tip_height).map_err(store_error)?;
        for (symbol, rules) in &self.assets {
            let highest_confirmable = tip - i64::from(rules.confirmations_min) + 1;
            let rows: Vec<DepositRow> = sqlx::query_as(&format!(
                "UPDATE deposits SET status = 'confirmed', confirmed_at = now()
                 WHERE chain = $1 AND asset = $2 AND status = 'detected' AND block_height <= $3
                 RETURNING {DEPOSIT_COLUMNS}"
            ))
            .bind(&self.chain)
            .bind(symbol)
            .bind(highest_confirmable)
            .fetch_all(&mut **tx)
            .await
            .map_err(store_error)?;
            for row in &rows {
                let confirmations =
                    u64::try_from(tip - row.block_height + 1).map_err(store_error)?;
                assert!(confirmations >= u64::from(rules.confirmations_min));
                tracing::info!(chain = %self.chain, deposit_id = %row.deposit_id, asset = %row.asset,
                    member = %row.member_id, amount = %row.amount.to_plain_string(), confirmations, "deposit confirmed");
                self.emit(tx, row, DepositEventKind::Confirmed, confirmations, false)
                    .await?;
            }
        }
        Ok(())
    }
}

impl FollowerStore for PgChainStore {
    async fn tip(&self) -> Result<Option<BlockRef>, StoreError> {
        Ok(self.recent_blocks(1).await?.into_iter().next())
    }

    async fn recent_blocks(&self, limit: u32) -> Result<Vec<BlockRef>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT height, hash, parent_hash FROM chain_blocks WHERE chain = $1
             ORDER BY height DESC LIMIT $2",
        )
        .bind(&self.chain)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.into_iter()
            .map(|(height, hash, parent_hash)| {
                Ok(BlockRef {
                    height: u64::try_from(height).map_err(store_error)?,
                    hash: BlockHash::new(hash),
                    parent_hash: BlockHash::new(parent_hash),
                })
            })
            .collect()
    }

    async fn refresh_watchlist(&self) -> Result<(), StoreError> {
        let after = self.watched_up_to.load(Ordering::Acquire);
        let rows: Vec<(i64, String, Option<Vec<u8>>, i32)> = sqlx::query_as(
            "SELECT id, address, script_pubkey, derivation_index FROM deposit_addresses
             WHERE chain = $1 AND id > $2 ORDER BY id",
        )
        .bind(&self.chain)
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        if let Some(highest) = rows.iter().map(|row| i64::from(row.3)).max() {
            self.issued_max.fetch_max(highest, Ordering::AcqRel);
        }
        if let ChainWatchlist::Utxo(watchlist) = &self.watchlist {
            self.extend_lookahead(watchlist)?;
        }
        let Some((last_id, _, _, _)) = rows.last() else {
            return Ok(());
        };
        let last_id = *last_id;
        match &self.watchlist {
            ChainWatchlist::Evm(watchlist) => {
                let addresses = rows
                    .iter()
                    .map(|(_, address, _, _)| Address::from_str(address).map_err(store_error))
                    .collect::<Result<Vec<_>, _>>()?;
                watchlist.extend(addresses);
            }
            ChainWatchlist::Utxo(watchlist) => {
                let scripts = rows
                    .iter()
                    .map(|(id, _, script, _)| {
                        script.as_deref().ok_or_else(|| {
                            StoreError(
                                format!(
                                    "deposit address {id} of a UTXO chain has no script_pubkey"
                                )
                                .into(),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                watchlist.extend(scripts);
            }
        }
        self.watched_up_to.store(last_id, Ordering::Release);
        Ok(())
    }

    async fn connect_block(
        &self,
        block: &BlockRef,
        transfers: &[Transfer],
    ) -> Result<(), StoreError> {
        let height = i64::try_from(block.height).map_err(store_error)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query(
            "INSERT INTO chain_blocks (chain, height, hash, parent_hash) VALUES ($1, $2, $3, $4)",
        )
        .bind(&self.chain)
        .bind(height)
        .bind(block.hash.as_str())
        .bind(block.parent_hash.as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        for transfer in transfers {
            if let Some(row) = self.upsert_deposit(&mut tx, block, transfer).await? {
                tracing::info!(chain = %self.chain, deposit_id = %row.deposit_id, txid = %row.txid,
                    asset = %row.asset, member = %row.member_id, amount = %row.amount.to_plain_string(),
                    height = block.height, "deposit detected");
                self.emit(&mut tx, &row, DepositEventKind::Detected, 1, false)
                    .await?;
            }
        }
        self.confirm_deposits(&mut tx, block.height).await?;
        sqlx::query("DELETE FROM chain_blocks WHERE chain = $1 AND height < $2")
            .bind(&self.chain)
            .bind(height - i64::from(self.reorg_depth_max))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    async fn disconnect_above(&self, fork_height: u64) -> Result<(), StoreError> {
        let fork = i64::try_from(fork_height).map_err(store_error)?;
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let orphaned: Vec<DepositRowWithStatus> = sqlx::query_as(&format!(
            "WITH old AS (
                 SELECT deposit_id, status AS old_status FROM deposits
                 WHERE chain = $1 AND block_height > $2 AND status <> 'orphaned' FOR UPDATE)
             UPDATE deposits d SET status = 'orphaned', orphaned_at = now()
             FROM old WHERE d.deposit_id = old.deposit_id
             RETURNING {}, old.old_status",
            DEPOSIT_COLUMNS
                .split(", ")
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(&self.chain)
        .bind(fork)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        for row in &orphaned {
            if row.old_status == "ignored" {
                continue;
            }
            let was_confirmed = row.old_status == "confirmed";
            if was_confirmed {
                tracing::error!(chain = %self.chain, deposit_id = %row.deposit.deposit_id,
                    amount = %row.deposit.amount.to_plain_string(), "a confirmed deposit was orphaned by a reorg");
            } else {
                tracing::warn!(chain = %self.chain, deposit_id = %row.deposit.deposit_id, "deposit orphaned by a reorg");
            }
            self.emit(
                &mut tx,
                &row.deposit,
                DepositEventKind::Orphaned,
                0,
                was_confirmed,
            )
            .await?;
        }
        // Look-ahead payments follow their blocks too; re-mined ones are recorded again.
        sqlx::query("DELETE FROM unassigned_deposits WHERE chain = $1 AND block_height > $2")
            .bind(&self.chain)
            .bind(fork)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query("DELETE FROM chain_blocks WHERE chain = $1 AND height > $2")
            .bind(&self.chain)
            .bind(fork)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }
}

#[derive(sqlx::FromRow)]
struct DepositRowWithStatus {
    #[sqlx(flatten)]
    deposit: DepositRow,
    old_status: String,
}
