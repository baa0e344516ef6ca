//! The payout engine of a Bitcoin or Dash chain.
//!
//! Each round:
//! 1. every open payout is pushed forward: if one of its attempts is in a block of the best
//!    chain with the asset's `confirmations_min`, it is confirmed; if none is mined yet the
//!    current attempt is (re-)broadcast (idempotent: the node answers "already known" or
//!    "already in chain"), and on Bitcoin a payout unconfirmed for `rbf_after_blocks` is
//!    replaced with a higher fee (BIP125: same inputs, smaller change);
//! 2. the `requested` withdrawals (up to `batch_max`) are paid by one new transaction: coin
//!    selection over the wallet's confirmed UTXOs that no other payout spends, fee rate from
//!    `estimatesmartfee` bounded by `fee_rate_floor`/`fee_rate_cap`, change to the next
//!    index of the change branch; signed with key A, then by the cosigner with key B,
//!    finalized, and stored (`signed`) before the first broadcast.
//!
//! Mined attempts are found by listing the txids of each block since the payout was signed
//! (`getblock <hash> 1`), so no `-txindex` and no node wallet is needed.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bigdecimal::BigDecimal;
use bitcoin::consensus::encode::serialize;
use bitcoin::{Amount, FeeRate, OutPoint, Txid};
use coinhub_chains::bitcoin::rpc::{BitcoinRpc, RpcError};
use coinhub_chains::destination;
use coinhub_custody::psbt;
use coinhub_custody::spend::{self, ChangeOutput, Payout, SpendError, SpendPlan, WalletUtxo};
use coinhub_custody::utxo::{Branch, MultisigScript, UtxoWallet};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::TRANSIENT_REFUSALS;
use super::faults::crash_point;
use super::intake::destination_network;
use super::payouts::{self, Mined, NewAttempt, NewPayout, OpenPayout};
use super::store::WithdrawalRow;
use crate::config::{Config, VaultConfig, WithdrawalConfig};
use crate::cosigner::client::{CosignerClient, CosignerError};

/// The spend plan of a payout's current attempt, stored as JSON in `payouts.plan` so a fee
/// bump after a restart starts from exactly what was signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPlan {
    /// The unsigned PSBT (base64).
    psbt: String,
    /// `(txid, vout, amount in satoshi, branch 0|1, index)` of each input, in order.
    inputs: Vec<(String, u32, u64, u32, u32)>,
    /// `(request id, vout)`.
    payout_vouts: Vec<(String, u32)>,
    /// `(vout, amount in satoshi, change index)`.
    change: Option<(u32, u64, u32)>,
    /// Fee in satoshi.
    fee: u64,
    /// Estimated vsize of the signed transaction.
    vsize: u64,
    /// Chain height when this attempt was signed (a bump is due `rbf_after_blocks` later).
    signed_height: u64,
}

impl StoredPlan {
    fn of(plan: &SpendPlan, signed_height: u64) -> Self {
        Self {
            psbt: psbt::psbt_to_base64(&plan.psbt),
            inputs: plan
                .inputs
                .iter()
                .map(|u| {
                    (
                        u.outpoint.txid.to_string(),
                        u.outpoint.vout,
                        u.amount.to_sat(),
                        u.branch.index(),
                        u.index,
                    )
                })
                .collect(),
            payout_vouts: plan.payout_vouts.clone(),
            change: plan
                .change
                .as_ref()
                .map(|c| (c.vout, c.amount.to_sat(), c.index)),
            fee: plan.fee.to_sat(),
            vsize: plan.vsize,
            signed_height,
        }
    }

    fn to_plan(&self) -> anyhow::Result<SpendPlan> {
        let inputs = self
            .inputs
            .iter()
            .map(|(txid, vout, amount, branch, index)| {
                Ok(WalletUtxo {
                    outpoint: OutPoint::new(Txid::from_str(txid)?, *vout),
                    amount: Amount::from_sat(*amount),
                    branch: if *branch == 0 {
                        Branch::Receive
                    } else {
                        Branch::Change
                    },
                    index: *index,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(SpendPlan {
            psbt: psbt::parse_psbt(&self.psbt)?,
            inputs,
            payout_vouts: self.payout_vouts.clone(),
            change: self.change.map(|(vout, amount, index)| ChangeOutput {
                vout,
                amount: Amount::from_sat(amount),
                index,
            }),
            fee: Amount::from_sat(self.fee),
            vsize: self.vsize,
        })
    }
}

/// Everything one UTXO chain's payout engine needs.
pub struct UtxoEngine {
    /// The chain's name.
    pub chain: String,
    /// The chain's coin symbol (upper case).
    pub asset: String,
    /// The coin's `confirmations_min`.
    pub confirmations_min: u32,
    /// The 2-of-3 wallet.
    pub wallet: UtxoWallet,
    /// The node.
    pub rpc: BitcoinRpc,
    /// `[chains.<name>.withdrawals]`.
    pub settings: WithdrawalConfig,
    /// The whole configuration (destination networks).
    pub config: Arc<Config>,
    /// The database.
    pub pool: PgPool,
    /// Key A's Vault transit key.
    pub vault: VaultConfig,
    /// The cosigner (key B); without it nothing is signed.
    pub cosigner: Option<CosignerClient>,
    /// Metrics.
    pub metrics: crate::metrics::Metrics,
    /// Txids of recent blocks, by height (with the block hash they belong to).
    blocks: Mutex<HashMap<u64, (String, HashSet<Txid>)>>,
}

/// Why a round stopped early; the engine logs it and tries again next round.
type RoundResult = anyhow::Result<()>;

impl UtxoEngine {
    /// An engine; see the fields.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chain: String,
        asset: String,
        confirmations_min: u32,
        wallet: UtxoWallet,
        rpc: BitcoinRpc,
        settings: WithdrawalConfig,
        config: Arc<Config>,
        pool: PgPool,
        vault: VaultConfig,
        cosigner: Option<CosignerClient>,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            chain,
            asset,
            confirmations_min,
            wallet,
            rpc,
            settings,
            config,
            pool,
            vault,
            cosigner,
            metrics,
            blocks: Mutex::new(HashMap::new()),
        }
    }

    /// Runs rounds until `cancel` fires. A failed round is logged and retried.
    pub async fn run(self, cancel: CancellationToken) {
        let pause = Duration::from_millis(self.settings.poll_interval_ms);
        if self.cosigner.is_none() {
            tracing::warn!(chain = %self.chain, "no [cosigner] configured: withdrawals are validated but not paid");
        }
        while !cancel.is_cancelled() {
            let outcome = self.round().await;
            payouts::report_round(&self.pool, &self.metrics, &self.chain, &outcome).await;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round: push open payouts, then pay new requests.
    ///
    /// Errors: the node's, the database's, Vault's, the cosigner's transport.
    pub async fn round(&self) -> RoundResult {
        let tip = self.rpc.get_block_count().await?;
        let open = payouts::open_payouts(&self.pool, &self.chain).await?;
        // Only blocks from the oldest open payout's signing height on are looked at again.
        let oldest = open
            .iter()
            .filter_map(|p| p.broadcast_height.and_then(|h| u64::try_from(h).ok()))
            .min()
            .unwrap_or(tip);
        self.blocks
            .lock()
            .await
            .retain(|height, _| *height >= oldest);
        for payout in open {
            self.push(&payout, tip).await?;
        }
        if self.cosigner.is_some() {
            self.pay_requested(tip).await?;
        }
        Ok(())
    }

    /// Txids of the best chain's block at `height`, cached while its hash stays the same.
    async fn block_txids(&self, height: u64) -> anyhow::Result<(String, HashSet<Txid>)> {
        let hash = self.rpc.get_block_hash(height).await?.to_string();
        let mut blocks = self.blocks.lock().await;
        if let Some((cached, txids)) = blocks.get(&height)
            && *cached == hash
        {
            return Ok((hash, txids.clone()));
        }
        let block: serde_json::Value = self.rpc.call("getblock", &[json!(hash), json!(1)]).await?;
        let txids = block["tx"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("getblock {hash} 1: no tx array"))?
            .iter()
            .map(|t| Txid::from_str(t.as_str().unwrap_or_default()))
            .collect::<Result<HashSet<_>, _>>()?;
        blocks.insert(height, (hash.clone(), txids.clone()));
        Ok((hash, txids))
    }

    /// The attempt of `payout` that is in the best chain, with its height and block hash.
    async fn find_mined(
        &self,
        payout: &OpenPayout,
        tip: u64,
    ) -> anyhow::Result<Option<(usize, u64, String)>> {
        let start = payout
            .broadcast_height
            .and_then(|h| u64::try_from(h).ok())
            .unwrap_or(tip);
        let txids: Vec<Txid> = payout
            .attempts
            .iter()
            .map(|a| Txid::from_str(&a.txid))
            .collect::<Result<_, _>>()?;
        for height in start..=tip {
            let (hash, in_block) = self.block_txids(height).await?;
            if let Some(index) = txids.iter().position(|t| in_block.contains(t)) {
                return Ok(Some((index, height, hash)));
            }
        }
        Ok(None)
    }

    async fn push(&self, payout: &OpenPayout, tip: u64) -> RoundResult {
        if let Some((index, height, hash)) = self.find_mined(payout, tip).await? {
            let confirmations = tip + 1 - height;
            if confirmations >= u64::from(self.confirmations_min) {
                let attempt = &payout.attempts[index];
                let fee = bigdecimal_u128(&attempt.fee)?;
                let mined = Mined {
                    attempt: attempt.attempt,
                    txid: attempt.txid.clone(),
                    height,
                    hash,
                    fee,
                    fee_asset: self.asset.clone(),
                };
                payouts::confirm(&self.pool, &self.chain, payout.payout_id, &mined).await?;
                tracing::info!(chain = %self.chain, payout = payout.payout_id, txid = %attempt.txid, height, "withdrawal payout confirmed");
            } else if payout.status == "signed" {
                // Broadcast before a crash, state not stored: the node has it.
                let mined = &payout.attempts[index];
                payouts::mark_broadcast(
                    &self.pool,
                    payout.payout_id,
                    mined.attempt,
                    &mined.txid,
                    tip,
                )
                .await?;
            }
            return Ok(());
        }
        let current = payout.current();
        match self.rpc.send_raw_transaction(&current.raw_tx).await {
            Ok(_) => {
                crash_point("after_broadcast");
                payouts::mark_broadcast(
                    &self.pool,
                    payout.payout_id,
                    current.attempt,
                    &current.txid,
                    tip,
                )
                .await?;
            }
            Err(RpcError::Rejected { reason }) | Err(RpcError::VerifyError { message: reason }) => {
                tracing::warn!(chain = %self.chain, payout = payout.payout_id, txid = %current.txid, %reason, "node refuses the payout transaction");
            }
            Err(other) => return Err(other.into()),
        }
        self.bump_if_stuck(payout, tip).await
    }

    async fn bump_if_stuck(&self, payout: &OpenPayout, tip: u64) -> RoundResult {
        if self.wallet.script() != MultisigScript::Wsh || payout.status != "broadcast" {
            return Ok(());
        }
        let Some(plan) = &payout.plan else {
            return Ok(());
        };
        let stored: StoredPlan = serde_json::from_value(plan.clone())?;
        if tip < stored.signed_height + u64::from(self.settings.rbf_after_blocks) {
            return Ok(());
        }
        let previous = stored.to_plan()?;
        let old_rate = previous.fee.to_sat().div_ceil(previous.vsize.max(1));
        let target = self
            .fee_rate_sat_vb()
            .await?
            .max(old_rate + old_rate / 2 + 1);
        let rate = target.min(self.settings.fee_rate_cap.max(old_rate + 1));
        let plan = match spend::bump_fee(&self.wallet, &previous, fee_rate(rate)) {
            Ok(plan) => plan,
            Err(error) => {
                tracing::warn!(chain = %self.chain, payout = payout.payout_id, %error, "cannot bump the payout's fee");
                return Ok(());
            }
        };
        let request_ids = self.payout_request_ids(payout.payout_id).await?;
        let attempt = self.sign(&plan, &request_ids).await?;
        let attempt = match attempt {
            Signed::Done(attempt) => attempt,
            Signed::Refused { rule, reason } => {
                tracing::error!(chain = %self.chain, payout = payout.payout_id, %rule, %reason, "cosigner refuses the fee bump");
                return Ok(());
            }
        };
        let stored = serde_json::to_value(StoredPlan::of(&plan, tip))?;
        let number =
            payouts::add_attempt(&self.pool, payout.payout_id, &attempt, Some(stored)).await?;
        tracing::info!(chain = %self.chain, payout = payout.payout_id, attempt = number, txid = %attempt.txid, fee = attempt.fee, "payout replaced with a higher fee (BIP125)");
        if let Ok(_) | Err(RpcError::AlreadyInChain { .. }) =
            self.rpc.send_raw_transaction(&attempt.raw_tx).await
        {
            payouts::mark_broadcast(&self.pool, payout.payout_id, number, &attempt.txid, tip)
                .await?;
        }
        Ok(())
    }

    async fn payout_request_ids(&self, payout_id: i64) -> anyhow::Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT withdrawal_id FROM withdrawals WHERE payout_id = $1 ORDER BY withdrawal_id",
        )
        .bind(payout_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// `estimatesmartfee` in sat/vB, bounded by the configured floor and cap; the floor when
    /// the node has no estimate (regtest).
    async fn fee_rate_sat_vb(&self) -> anyhow::Result<u64> {
        let estimate = self
            .rpc
            .estimate_smart_fee(self.settings.fee_target_blocks, None)
            .await?;
        let rate = estimate
            .fee_per_kvb
            .map_or(0, |per_kvb| per_kvb.to_sat().div_ceil(1000));
        Ok(rate.clamp(self.settings.fee_rate_floor, self.settings.fee_rate_cap))
    }

    /// The wallet's confirmed UTXOs no payout spends: confirmed deposits to handed-out
    /// addresses, and change of confirmed payouts.
    async fn spendable(&self) -> anyhow::Result<Vec<WalletUtxo>> {
        let rows: Vec<(String, i32, BigDecimal, i32, i32)> = sqlx::query_as(
            "SELECT d.txid, d.idx, d.amount, 0, a.derivation_index
             FROM deposits d JOIN deposit_addresses a ON a.chain = d.chain AND a.address = d.address
             WHERE d.chain = $1 AND d.status = 'confirmed'
               AND NOT EXISTS (SELECT 1 FROM payout_inputs p
                               WHERE p.chain = d.chain AND p.txid = d.txid AND p.vout = d.idx)
             UNION ALL
             SELECT c.txid, c.vout, c.amount, 1, c.change_index
             FROM wallet_change c
             WHERE c.chain = $1
               AND NOT EXISTS (SELECT 1 FROM payout_inputs p
                               WHERE p.chain = c.chain AND p.txid = c.txid AND p.vout = c.vout)",
        )
        .bind(&self.chain)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(txid, vout, amount, branch, index)| {
                Ok(WalletUtxo {
                    outpoint: OutPoint::new(Txid::from_str(&txid)?, u32::try_from(vout)?),
                    amount: Amount::from_sat(u64::try_from(bigdecimal_u128(&amount)?)?),
                    branch: if branch == 0 {
                        Branch::Receive
                    } else {
                        Branch::Change
                    },
                    index: u32::try_from(index)?,
                })
            })
            .collect()
    }

    fn payout_of(&self, row: &WithdrawalRow) -> anyhow::Result<Payout> {
        let network = destination_network(&self.config, &self.chain)?;
        let parsed = destination::parse_destination(network, &row.destination)?;
        let script_pubkey = parsed
            .script_pubkey()
            .ok_or_else(|| anyhow::anyhow!("not a UTXO destination"))?
            .clone();
        let amount = row
            .amount
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("requested withdrawal without amount"))?;
        Ok(Payout {
            request_id: row.withdrawal_id.to_string(),
            script_pubkey,
            amount: Amount::from_sat(u64::try_from(bigdecimal_u128(amount)?)?),
        })
    }

    async fn pay_requested(&self, tip: u64) -> RoundResult {
        let limit = i64::from(self.settings.batch_max.max(1));
        let mut requests = payouts::requested(&self.pool, &self.chain, None, limit).await?;
        while !requests.is_empty() {
            match self.pay_batch(&requests, tip).await? {
                BatchOutcome::Paid | BatchOutcome::Refused => {
                    requests = payouts::requested(&self.pool, &self.chain, None, limit).await?;
                }
                BatchOutcome::Smaller(n) => requests.truncate(n),
            }
        }
        Ok(())
    }

    /// Tries to pay `requests` in one transaction.
    async fn pay_batch(
        &self,
        requests: &[WithdrawalRow],
        tip: u64,
    ) -> anyhow::Result<BatchOutcome> {
        let payouts: Vec<Payout> = requests
            .iter()
            .map(|r| self.payout_of(r))
            .collect::<anyhow::Result<_>>()?;
        let utxos = self.spendable().await?;
        let rate = self.fee_rate_sat_vb().await?;
        let mut tx = self.pool.begin().await?;
        let change_index =
            u32::try_from(payouts::allocate(&mut tx, &self.chain, "change_index", 0).await?)?;
        let plan =
            match spend::plan_spend(&self.wallet, &utxos, &payouts, fee_rate(rate), change_index) {
                Ok(plan) => plan,
                Err(SpendError::InsufficientFunds { .. }) if requests.len() > 1 => {
                    return Ok(BatchOutcome::Smaller(requests.len() - 1));
                }
                Err(error @ SpendError::InsufficientFunds { .. }) => {
                    drop(tx);
                    let reason = format!("hot wallet balance: {error}");
                    payouts::refuse(&self.pool, requests[0].withdrawal_id, &reason).await?;
                    return Ok(BatchOutcome::Refused);
                }
                Err(SpendError::PayoutBelowDust { request_id, .. }) => {
                    drop(tx);
                    let id = Uuid::from_str(&request_id)?;
                    let reason = format!(
                        "amount: below the dust limit of {} base units",
                        spend::DUST_LIMIT_SAT
                    );
                    payouts::refuse(&self.pool, id, &reason).await?;
                    return Ok(BatchOutcome::Refused);
                }
                Err(other) => return Err(other.into()),
            };
        let ids: Vec<Uuid> = requests.iter().map(|r| r.withdrawal_id).collect();
        let attempt = match self.sign(&plan, &ids).await? {
            Signed::Done(attempt) => attempt,
            Signed::Refused { .. } if requests.len() > 1 => {
                // One request may break the policy: pay them one by one to find it.
                return Ok(BatchOutcome::Smaller(1));
            }
            Signed::Refused { rule, reason } => {
                drop(tx);
                let reason = format!("cosigner refused ({rule}): {reason}");
                payouts::refuse(&self.pool, requests[0].withdrawal_id, &reason).await?;
                return Ok(BatchOutcome::Refused);
            }
        };
        let payout = NewPayout {
            chain: self.chain.clone(),
            asset: self.asset.clone(),
            withdrawals: ids,
            safe_nonce: None,
            executor_nonce: None,
            plan: Some(serde_json::to_value(StoredPlan::of(&plan, tip))?),
            attempt: attempt.clone(),
        };
        let payout_id = payouts::record_signed(&mut tx, &payout).await?;
        sqlx::query("UPDATE payouts SET broadcast_height = $2 WHERE payout_id = $1")
            .bind(payout_id)
            .bind(i64::try_from(tip)?)
            .execute(&mut *tx)
            .await?;
        let outpoints: Vec<(String, u32)> = plan
            .inputs
            .iter()
            .map(|u| (u.outpoint.txid.to_string(), u.outpoint.vout))
            .collect();
        payouts::reserve_inputs(&mut tx, &self.chain, payout_id, &outpoints).await?;
        tx.commit().await?;
        tracing::info!(chain = %self.chain, payout = payout_id, txid = %attempt.txid, withdrawals = requests.len(), fee = attempt.fee, "withdrawal payout signed and stored");
        crash_point("after_sign");
        if let Some(open) = payouts::open_payouts(&self.pool, &self.chain)
            .await?
            .into_iter()
            .find(|p| p.payout_id == payout_id)
        {
            self.push(&open, tip).await?;
        }
        Ok(BatchOutcome::Paid)
    }

    /// Signs `plan` with key A and the cosigner's key B, finalizes it.
    async fn sign(&self, plan: &SpendPlan, request_ids: &[Uuid]) -> anyhow::Result<Signed> {
        let cosigner = self
            .cosigner
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no [cosigner] configured"))?;
        let mut ours = plan.psbt.clone();
        {
            let mnemonic = crate::custody::decrypt_key_a(&self.pool, &self.vault).await?;
            psbt::sign_psbt(&mut ours, &mnemonic.to_seed(), &self.wallet)?;
        }
        let theirs = match cosigner
            .sign_utxo(
                &self.chain,
                &self.asset,
                request_ids,
                &psbt::psbt_to_base64(&plan.psbt),
            )
            .await
        {
            Ok(signed) => psbt::parse_psbt(&signed)?,
            Err(CosignerError::Refused { rule, reason })
                if TRANSIENT_REFUSALS.contains(&rule.as_str()) =>
            {
                // The cosigner lags behind (its queue or its node): try again later.
                anyhow::bail!("the cosigner cannot check the spend yet ({rule}): {reason}");
            }
            Err(CosignerError::Refused { rule, reason }) => {
                tracing::warn!(chain = %self.chain, %rule, %reason, "cosigner refused to sign");
                return Ok(Signed::Refused { rule, reason });
            }
            Err(other) => return Err(other.into()),
        };
        psbt::combine_psbt(&mut ours, theirs)?;
        let tx = psbt::finalize_psbt(&mut ours)?;
        Ok(Signed::Done(NewAttempt {
            txid: tx.compute_txid().to_string(),
            raw_tx: serialize(&tx),
            fee: u128::from(plan.fee.to_sat()),
            fee_rate: u128::from(plan.fee.to_sat()) * 1000 / u128::from(plan.vsize.max(1)),
            change: plan
                .change
                .as_ref()
                .map(|c| (c.vout, c.amount.to_sat(), c.index)),
        }))
    }
}

enum Signed {
    Done(NewAttempt),
    Refused { rule: String, reason: String },
}

enum BatchOutcome {
    /// A payout was stored (and sent).
    Paid,
    /// A request was refused; look again.
    Refused,
    /// Try the first `n` requests only.
    Smaller(usize),
}

fn fee_rate(sat_per_vb: u64) -> FeeRate {
    FeeRate::from_sat_per_kwu(sat_per_vb.saturating_mul(250))
}

fn bigdecimal_u128(value: &BigDecimal) -> anyhow::Result<u128> {
    value
        .with_scale(0)
        .to_string()
        .parse()
        .map_err(|e| anyhow::anyhow!("stored amount {value} is not a u128: {e}"))
}
