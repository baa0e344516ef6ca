//! The payout engine of an EVM chain: the hot wallet is a Safe 2-of-3 (owners: keys A, B, C
//! at `m/44'/60'/0'/1/0`), and a withdrawal is one `execTransaction` (a native transfer or an
//! ERC-20 `transfer`) with EIP-712 signatures of A and of the cosigner's B, submitted by the
//! executor EOA (key A's `m/44'/60'/0'/2/0`), which pays the gas.
//!
//! Each round:
//! 1. every open payout is pushed forward, in executor-nonce order: a mined attempt with the
//!    asset's `confirmations_min` (its block still in the best chain) confirms it; otherwise
//!    the current attempt is (re-)broadcast, which also repairs a transaction the node
//!    dropped and so a gap in the executor's nonces; an attempt not mined after
//!    `replace_after_secs` is replaced with the same executor nonce and at least 10 % more
//!    fee (EIP-1559 `maxFeePerGas` and `maxPriorityFeePerGas`, capped by
//!    `max_fee_per_gas_cap`). The Safe transaction and its signatures stay the same.
//! 2. each `requested` withdrawal gets its Safe nonce and executor nonce from the database
//!    (`wallet_counters`, first value read from the chain), is signed, and stored (`signed`)
//!    before it is broadcast.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol;
use coinhub_custody::derivation::{EXECUTOR_BRANCH, MasterKey, SAFE_OWNER_BRANCH};
use coinhub_custody::safe::{self, SafeTx};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::TRANSIENT_REFUSALS;
use super::faults::crash_point;
use super::payouts::{self, Attempt, Mined, NewAttempt, NewPayout, OpenPayout};
use super::store::WithdrawalRow;
use crate::config::{VaultConfig, WithdrawalConfig};
use crate::cosigner::client::{CosignerClient, CosignerError};

sol! {
    #[sol(rpc)]
    interface ISafeNonce {
        function nonce() external view returns (uint256);
        function getOwners() external view returns (address[] memory);
        function getThreshold() external view returns (uint256);
    }

    #[sol(rpc)]
    interface IErc20Balance {
        function balanceOf(address owner) external view returns (uint256);
    }
}

/// Gas limit headroom over `eth_estimateGas`, in percent.
const GAS_HEADROOM_PERCENT: u64 = 25;
/// A replacement raises both fee caps by this many percent (nodes require at least 10 %).
const REPLACEMENT_BUMP_PERCENT: u64 = 15;

/// An EVM asset the engine pays: `None` contract = the native coin.
#[derive(Debug, Clone)]
pub struct EvmAsset {
    /// ERC-20 contract, or `None`.
    pub contract: Option<Address>,
    /// `confirmations_min`.
    pub confirmations_min: u32,
}

/// What is stored in `payouts.plan` of an EVM payout: enough to re-sign the executor's
/// transaction for a replacement without asking the cosigner again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSafeCall {
    /// The Safe transaction both owners signed.
    safe_tx: SafeTx,
    /// `execTransaction` calldata with both signatures.
    calldata: Bytes,
    /// Gas limit of the executor's transaction.
    gas_limit: u64,
    /// `maxPriorityFeePerGas` of the current attempt, wei.
    max_priority_fee_per_gas: u128,
}

/// Everything one EVM chain's payout engine needs.
pub struct EvmEngine {
    /// The chain's name.
    pub chain: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The native coin's symbol (fees are paid in it).
    pub native: String,
    /// Payable assets by symbol.
    pub assets: BTreeMap<String, EvmAsset>,
    /// The Safe (hot wallet).
    pub safe: Address,
    /// The node.
    pub provider: DynProvider,
    /// `[chains.<name>.withdrawals]`.
    pub settings: WithdrawalConfig,
    /// The database.
    pub pool: PgPool,
    /// Key A's Vault transit key.
    pub vault: VaultConfig,
    /// The cosigner (key B).
    pub cosigner: Option<CosignerClient>,
    /// Metrics.
    pub metrics: crate::metrics::Metrics,
}

impl EvmEngine {
    /// Connects to `rpc_url` (no request is made yet).
    ///
    /// Errors: an unparsable URL.
    pub fn provider(rpc_url: &str) -> anyhow::Result<DynProvider> {
        let url = rpc_url
            .parse()
            .map_err(|e| anyhow::anyhow!("rpc url {rpc_url}: {e}"))?;
        Ok(ProviderBuilder::new().connect_http(url).erased())
    }

    /// Runs rounds until `cancel` fires. A failed round is logged and retried.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let pause = Duration::from_millis(self.settings.poll_interval_ms);
        if let Err(error) = self.check_safe().await {
            tracing::error!(chain = %self.chain, error = format!("{error:#}"), "the configured Safe does not look like our 2-of-3 hot wallet");
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

    /// Checks that the Safe is 2-of-3 and that key A's owner address is one of its owners.
    async fn check_safe(&self) -> anyhow::Result<()> {
        let contract = ISafeNonce::new(self.safe, &self.provider);
        let owners = contract.getOwners().call().await?;
        let threshold = contract.getThreshold().call().await?;
        let ours = self.owner_a().await?;
        anyhow::ensure!(
            owners.len() == 3 && threshold == U256::from(2u8),
            "Safe {} has {} owners and threshold {threshold}, expected 2-of-3",
            self.safe,
            owners.len()
        );
        anyhow::ensure!(
            owners.contains(&ours),
            "key a's owner {ours} is not an owner of Safe {}",
            self.safe
        );
        Ok(())
    }

    async fn owner_a(&self) -> anyhow::Result<Address> {
        let mnemonic = crate::custody::decrypt_key_a(&self.pool, &self.vault).await?;
        let master = MasterKey::from_seed(&mnemonic.to_seed())?;
        Ok(master.evm_key_at(SAFE_OWNER_BRANCH, 0)?.address())
    }

    /// One round: push open payouts, then pay new requests.
    ///
    /// Errors: the node's, the database's, Vault's, the cosigner's transport.
    pub async fn round(&self) -> anyhow::Result<()> {
        let tip = self.provider.get_block_number().await?;
        for payout in payouts::open_payouts(&self.pool, &self.chain).await? {
            self.push(&payout, tip).await?;
        }
        if self.cosigner.is_some() {
            let requests = payouts::requested(&self.pool, &self.chain, None, 50).await?;
            for request in requests {
                self.pay(&request, tip).await?;
            }
        }
        Ok(())
    }

    async fn push(&self, payout: &OpenPayout, tip: u64) -> anyhow::Result<()> {
        for attempt in &payout.attempts {
            let hash: B256 = attempt.txid.parse()?;
            let Some(receipt) = self.provider.get_transaction_receipt(hash).await? else {
                continue;
            };
            let (Some(height), Some(block_hash)) = (receipt.block_number, receipt.block_hash)
            else {
                continue;
            };
            if !receipt.status() {
                tracing::error!(chain = %self.chain, payout = payout.payout_id, txid = %attempt.txid, "the Safe execTransaction reverted; an operator must look at it");
                return Ok(());
            }
            let confirmations = (tip + 1).saturating_sub(height);
            let needed = self
                .assets
                .get(&payout.asset)
                .map_or(1, |a| a.confirmations_min);
            let canonical = self
                .provider
                .get_block_by_number(BlockNumberOrTag::Number(height))
                .await?
                .is_some_and(|block| block.header.hash == block_hash);
            if !canonical {
                continue;
            }
            if confirmations >= u64::from(needed) {
                let fee = u128::from(receipt.gas_used) * receipt.effective_gas_price;
                let mined = Mined {
                    attempt: attempt.attempt,
                    txid: attempt.txid.clone(),
                    height,
                    hash: block_hash.to_string(),
                    fee,
                    fee_asset: self.native.clone(),
                };
                payouts::confirm(&self.pool, &self.chain, payout.payout_id, &mined).await?;
                tracing::info!(chain = %self.chain, payout = payout.payout_id, txid = %attempt.txid, height, "withdrawal payout confirmed");
            } else if payout.status == "signed" {
                payouts::mark_broadcast(
                    &self.pool,
                    payout.payout_id,
                    attempt.attempt,
                    &attempt.txid,
                    tip,
                )
                .await?;
            }
            return Ok(());
        }
        let current = payout.current();
        match self.provider.send_raw_transaction(&current.raw_tx).await {
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
            Err(error) => {
                // "already known", or an older attempt is pending with the same nonce.
                tracing::debug!(chain = %self.chain, payout = payout.payout_id, %error, "re-broadcast refused");
            }
        }
        self.replace_if_stuck(payout, current).await
    }

    async fn replace_if_stuck(&self, payout: &OpenPayout, current: &Attempt) -> anyhow::Result<()> {
        let age = OffsetDateTime::now_utc() - current.created_at;
        if age < time::Duration::seconds(i64::try_from(self.settings.replace_after_secs)?) {
            return Ok(());
        }
        let Some(plan) = &payout.plan else {
            return Ok(());
        };
        let mut call: StoredSafeCall = serde_json::from_value(plan.clone())?;
        let old_max_fee: u128 = current.fee_rate.to_string().parse()?;
        let bump = |value: u128| value + value * u128::from(REPLACEMENT_BUMP_PERCENT) / 100 + 1;
        let fees = self.provider.estimate_eip1559_fees().await?;
        let cap = u128::try_from(self.settings.max_fee_per_gas_cap).unwrap_or(u128::MAX);
        let max_fee = bump(old_max_fee).max(fees.max_fee_per_gas);
        if max_fee > cap {
            tracing::warn!(chain = %self.chain, payout = payout.payout_id, max_fee, cap, "payout is stuck but a replacement would exceed max_fee_per_gas_cap");
            return Ok(());
        }
        let priority = bump(call.max_priority_fee_per_gas).min(max_fee);
        let nonce = u64::try_from(payout.executor_nonce.unwrap_or_default())?;
        let attempt = self.sign_executor(&call, nonce, max_fee, priority).await?;
        call.max_priority_fee_per_gas = priority;
        let number = payouts::add_attempt(
            &self.pool,
            payout.payout_id,
            &attempt,
            Some(serde_json::to_value(&call)?),
        )
        .await?;
        tracing::info!(chain = %self.chain, payout = payout.payout_id, attempt = number, txid = %attempt.txid, max_fee, "stuck payout replaced with the same nonce and a higher fee");
        if self
            .provider
            .send_raw_transaction(&attempt.raw_tx)
            .await
            .is_ok()
        {
            let tip = self.provider.get_block_number().await?;
            payouts::mark_broadcast(&self.pool, payout.payout_id, number, &attempt.txid, tip)
                .await?;
        }
        Ok(())
    }

    /// Signs the executor's EIP-1559 transaction calling `execTransaction` on the Safe.
    async fn sign_executor(
        &self,
        call: &StoredSafeCall,
        nonce: u64,
        max_fee_per_gas: u128,
        max_priority_fee_per_gas: u128,
    ) -> anyhow::Result<NewAttempt> {
        let signer = {
            let mnemonic = crate::custody::decrypt_key_a(&self.pool, &self.vault).await?;
            let master = MasterKey::from_seed(&mnemonic.to_seed())?;
            master.evm_key_at(EXECUTOR_BRANCH, 0)?.to_signer()
        };
        let executor = signer.address();
        let wallet = EthereumWallet::new(signer);
        let request = TransactionRequest::default()
            .with_from(executor)
            .with_to(self.safe)
            .with_input(call.calldata.clone())
            .with_value(U256::ZERO)
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(call.gas_limit)
            .with_max_fee_per_gas(max_fee_per_gas)
            .with_max_priority_fee_per_gas(max_priority_fee_per_gas);
        let envelope = request.build(&wallet).await?;
        Ok(NewAttempt {
            txid: envelope.tx_hash().to_string(),
            raw_tx: envelope.encoded_2718(),
            fee: u128::from(call.gas_limit) * max_fee_per_gas,
            fee_rate: max_fee_per_gas,
            change: None,
        })
    }

    /// The Safe's balance of `asset` minus what open payouts of it will still take.
    async fn hot_balance(&self, asset: &str, contract: Option<Address>) -> anyhow::Result<U256> {
        let held = match contract {
            None => self.provider.get_balance(self.safe).await?,
            Some(token) => {
                IErc20Balance::new(token, &self.provider)
                    .balanceOf(self.safe)
                    .call()
                    .await?
            }
        };
        let pending: Option<bigdecimal::BigDecimal> = sqlx::query_scalar(
            "SELECT sum(w.amount) FROM withdrawals w JOIN payouts p ON p.payout_id = w.payout_id
             WHERE p.chain = $1 AND p.asset = $2 AND p.status IN ('signed', 'broadcast')",
        )
        .bind(&self.chain)
        .bind(asset)
        .fetch_one(&self.pool)
        .await?;
        let pending = match pending {
            Some(sum) => U256::from_str_radix(&sum.with_scale(0).to_string(), 10)?,
            None => U256::ZERO,
        };
        Ok(held.saturating_sub(pending))
    }

    async fn pay(&self, request: &WithdrawalRow, tip: u64) -> anyhow::Result<()> {
        let Some(asset) = self.assets.get(&request.asset) else {
            let reason = format!("asset: {} is not payable on {}", request.asset, self.chain);
            return payouts::refuse(&self.pool, request.withdrawal_id, &reason).await;
        };
        let amount_text = request
            .amount
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("requested withdrawal without amount"))?
            .with_scale(0)
            .to_string();
        let amount = U256::from_str_radix(&amount_text, 10)?;
        let destination: Address = request.destination.parse()?;
        let available = self.hot_balance(&request.asset, asset.contract).await?;
        if available < amount {
            let reason = format!(
                "hot wallet balance: the Safe has {available} {} free, the withdrawal needs {amount}",
                request.asset
            );
            return payouts::refuse(&self.pool, request.withdrawal_id, &reason).await;
        }
        let cosigner = self
            .cosigner
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no [cosigner] configured"))?;

        let mut tx = self.pool.begin().await?;
        let onchain_safe_nonce = ISafeNonce::new(self.safe, &self.provider)
            .nonce()
            .call()
            .await?;
        let safe_nonce = payouts::allocate(
            &mut tx,
            &self.chain,
            "safe_nonce",
            u64::try_from(onchain_safe_nonce)?,
        )
        .await?;
        let safe_tx = match asset.contract {
            None => SafeTx::native_transfer(destination, amount, U256::from(safe_nonce)),
            Some(token) => {
                SafeTx::erc20_transfer(token, destination, amount, U256::from(safe_nonce))
            }
        };
        let hash = safe::safe_tx_hash(&safe_tx, self.chain_id, self.safe);
        let (owner_a, signature_a, executor) = {
            let mnemonic = crate::custody::decrypt_key_a(&self.pool, &self.vault).await?;
            let master = MasterKey::from_seed(&mnemonic.to_seed())?;
            let owner = master.evm_key_at(SAFE_OWNER_BRANCH, 0)?;
            let executor = master.evm_key_at(EXECUTOR_BRANCH, 0)?.address();
            (owner.address(), safe::sign_safe_tx(&owner, hash), executor)
        };
        let (owner_b, signature_b) = match cosigner
            .sign_evm(&self.chain, &request.asset, request.withdrawal_id, &safe_tx)
            .await
        {
            Ok(signed) => signed,
            Err(CosignerError::Refused { rule, reason })
                if TRANSIENT_REFUSALS.contains(&rule.as_str()) =>
            {
                // The cosigner lags behind (its queue or its node): try again later.
                anyhow::bail!("the cosigner cannot check the spend yet ({rule}): {reason}");
            }
            Err(CosignerError::Refused { rule, reason }) => {
                drop(tx);
                let reason = format!("cosigner refused ({rule}): {reason}");
                return payouts::refuse(&self.pool, request.withdrawal_id, &reason).await;
            }
            Err(other) => return Err(other.into()),
        };
        anyhow::ensure!(
            safe::recover_owner(hash, &signature_b)? == owner_b && owner_b != owner_a,
            "the cosigner's signature does not recover to its owner {owner_b}"
        );
        let calldata = safe::exec_transaction_calldata(
            &safe_tx,
            safe::pack_signatures(&[(owner_a, signature_a), (owner_b, signature_b)]),
        );
        let estimate = self
            .provider
            .estimate_gas(
                TransactionRequest::default()
                    .with_from(executor)
                    .with_to(self.safe)
                    .with_input(calldata.clone()),
            )
            .await?;
        let gas_limit = estimate + estimate * GAS_HEADROOM_PERCENT / 100;
        let onchain_executor_nonce = self.provider.get_transaction_count(executor).await?;
        let executor_nonce = payouts::allocate(
            &mut tx,
            &self.chain,
            "executor_nonce",
            onchain_executor_nonce,
        )
        .await?;
        let fees = self.provider.estimate_eip1559_fees().await?;
        let cap = u128::try_from(self.settings.max_fee_per_gas_cap).unwrap_or(u128::MAX);
        let max_fee = fees.max_fee_per_gas.min(cap);
        let priority = fees.max_priority_fee_per_gas.min(max_fee);
        let call = StoredSafeCall {
            safe_tx,
            calldata,
            gas_limit,
            max_priority_fee_per_gas: priority,
        };
        let attempt = self
            .sign_executor(&call, executor_nonce, max_fee, priority)
            .await?;
        let payout = NewPayout {
            chain: self.chain.clone(),
            asset: request.asset.clone(),
            withdrawals: vec![request.withdrawal_id],
            safe_nonce: Some(safe_nonce),
            executor_nonce: Some(executor_nonce),
            plan: Some(serde_json::to_value(&call)?),
            attempt,
        };
        let payout_id = payouts::record_signed(&mut tx, &payout).await?;
        sqlx::query("UPDATE payouts SET broadcast_height = $2 WHERE payout_id = $1")
            .bind(payout_id)
            .bind(i64::try_from(tip)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(chain = %self.chain, payout = payout_id, safe_nonce, executor_nonce, "withdrawal payout signed and stored");
        crash_point("after_sign");
        if let Some(open) = payouts::open_payouts(&self.pool, &self.chain)
            .await?
            .into_iter()
            .find(|p| p.payout_id == payout_id)
        {
            self.push(&open, tip).await?;
        }
        Ok(())
    }
}
