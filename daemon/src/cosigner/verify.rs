//! The cosigner's decision: reads a signing request's transaction from its own bytes, turns
//! it into a [`policy::ProposedSpend`], evaluates it against the cosigner's own copy of the
//! withdrawal requests and its own history of approvals, records the approval and signs with
//! key B — or refuses with a [`Refused`] that names the rule.
//!
//! - UTXO ([`Cosigner::sign_utxo`]): the PSBT is described by
//!   [`coinhub_custody::spend::describe_spend`] against the chain's 2-of-3 wallet (every input
//!   must be the wallet's; change is proved by derivation). Outputs are matched to the claimed
//!   requests by scriptPubKey (each request's destination parsed with
//!   `coinhub_chains::destination`) and exact amount; the fee is inputs − outputs. Signed by
//!   [`coinhub_custody::psbt::sign_psbt`].
//! - EVM ([`Cosigner::sign_evm`]): the SafeTx must be a plain transfer
//!   ([`coinhub_custody::safe::describe_safe_tx`]) of the asset's token (or the native coin);
//!   its hash uses the chain id and Safe address of the cosigner's config, never the caller's.
//!   Fee 0 (the executor pays gas). Signed with key B's Safe owner key (account `1/0`).
//!
//! Replays: the same unsigned transaction (UTXO: unsigned txid; EVM: SafeTx hash) for the same
//! requests is signed again without being counted again. A request already approved in
//! another UTXO transaction is approved again only if the new one spends at least one input
//! of every earlier one (a BIP125 replacement: at most one can confirm); an EVM request only
//! for the identical SafeTx hash.
//!
//! Every decision runs in one database transaction under an advisory lock (so two requests
//! cannot both fit under the 24 h limit); the approval is written, the transaction signed,
//! and the signature released only after the commit. A refusal or a failed signature rolls
//! everything back.
//!
//! Inputs against the cosigner's own node (`Cosigner::check_inputs`): the fee is inputs −
//! outputs, and the input amounts are what the PSBT claims (`witness_utxo`). Dash's (`sh`)
//! legacy sighash does not commit to them, so a lying proposer could understate them and
//! hide a fee far over `fee_cap`. Before deciding, every input is therefore looked up with
//! `gettxout <txid> <n> false` on the cosigner's own node (`[chains.<name>] rpc_urls`,
//! required for Dash, optional for Bitcoin whose BIP143 sighash commits to amounts): the
//! node's value and scriptPubKey must equal the PSBT's (`input_amount_mismatch`), and the
//! output must be in the node's UTXO set (`unknown_input`). `include_mempool = false` on
//! purpose: coinhubd spends only confirmed outputs, and a BIP125 replacement spends the same
//! confirmed inputs as the original attempt still in the mempool — with `true` the node
//! would report those inputs as spent (`null`) and every fee bump would be refused. A node
//! that cannot be reached (or answers unusably) is not a refusal: [`SignError::NodeUnavailable`]
//! (HTTP 503), which coinhubd retries; nothing is signed or recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alloy::primitives::Address;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, OutPoint, ScriptBuf};
use coinhub_chains::bitcoin::rpc::{BitcoinRpc, RpcError};
use coinhub_chains::destination;
use coinhub_custody::derivation::{self, MasterKey, SAFE_OWNER_BRANCH};
use coinhub_custody::keystore::{KeystoreError, Vault};
use coinhub_custody::policy::{self, Policy, Refusal};
use coinhub_custody::psbt;
use coinhub_custody::safe::{self, SafeTx};
use coinhub_custody::spend;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::config::{CosignerAssetConfig, CosignerChainConfig, CosignerConfig};
use super::keys::CosignerKeys;

/// Advisory lock key that serializes the cosigner's decisions (`"cosigner"` in ASCII).
const DECISION_LOCK_KEY: i64 = 0x636f_7369_676e_6572;

/// Most request ids one signing request may claim.
pub const REQUESTS_PER_SPEND_MAX: usize = 1_000;

/// `POST /v1/sign/utxo` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UtxoSignRequest {
    /// Configured chain name, e.g. `"bitcoin"`.
    pub chain: String,
    /// Asset symbol, e.g. `"BTC"`.
    pub asset: String,
    /// The withdrawal requests the transaction pays.
    pub request_ids: Vec<Uuid>,
    /// The unsigned (or A-signed) PSBT, base64, version 0 or 2.
    pub psbt: String,
}

/// `POST /v1/sign/utxo` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtxoSignReply {
    /// The PSBT with key B's partial signatures added, base64 (version 0).
    pub psbt: String,
}

/// `POST /v1/sign/evm` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmSignRequest {
    /// Configured chain name, e.g. `"ethereum"`.
    pub chain: String,
    /// Asset symbol, e.g. `"USDT"`.
    pub asset: String,
    /// Exactly one withdrawal request (one Safe transaction pays one withdrawal).
    pub request_ids: Vec<Uuid>,
    /// The Safe transaction.
    pub safe_tx: SafeTx,
}

/// `POST /v1/sign/evm` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvmSignReply {
    /// `0x` + 65 bytes `r ‖ s ‖ v` (v 27/28) over the SafeTx hash.
    pub signature: String,
    /// Key B's Safe owner address.
    pub owner: Address,
}

/// A refusal: `rule` is a stable snake_case name, `reason` the human text (from
/// [`Refusal`]'s `Display` for policy rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {reason}")]
pub struct Refused {
    /// The rule, e.g. `over_24h`, `denied`, `fee_over_cap`, `already_approved`.
    pub rule: &'static str,
    /// Why, naming the numbers.
    pub reason: String,
}

/// Why a signing request was not answered with a signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// Refused by a rule (HTTP 422).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Vault could not decrypt key B (HTTP 503); nothing was recorded.
    #[error("key b unavailable: {0}")]
    KeyUnavailable(#[from] KeystoreError),
    /// The cosigner's own node could not answer the input check (HTTP 503, transient:
    /// coinhubd retries); nothing was recorded.
    #[error("node unavailable: {0}")]
    NodeUnavailable(String),
    /// The database or another dependency failed (HTTP 500); nothing was recorded.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for SignError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(format!("database: {error}"))
    }
}

fn refuse(rule: &'static str, reason: impl Into<String>) -> SignError {
    SignError::Refused(Refused {
        rule,
        reason: reason.into(),
    })
}

/// The snake_case rule name of a policy refusal.
pub fn rule_of(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::UnknownAsset { .. } => "unknown_asset",
        Refusal::FeeOverCap { .. } => "fee_over_cap",
        Refusal::NoOutputs => "no_outputs",
        Refusal::RequestListedTwice { .. } => "request_listed_twice",
        Refusal::UnknownRequest { .. } => "unknown_request",
        Refusal::AlreadyPaid { .. } => "already_paid",
        Refusal::WrongAsset { .. } => "wrong_asset",
        Refusal::UnknownOutput { .. } => "unknown_output",
        Refusal::AmountChanged { .. } => "amount_changed",
        Refusal::PaidTwice { .. } => "paid_twice",
        Refusal::RequestNotPaid { .. } => "request_not_paid",
        Refusal::ZeroAmount { .. } => "zero_amount",
        Refusal::OverPerWithdrawal { .. } => "over_per_withdrawal",
        Refusal::Denied { .. } => "denied",
        Refusal::NotAllowed { .. } => "not_allowed",
        Refusal::Over24h { .. } => "over_24h",
        Refusal::Overflow { .. } => "overflow",
        _ => "policy",
    }
}

/// A request as loaded for a decision.
#[derive(Debug, Clone)]
struct KnownRequest {
    id: Uuid,
    asset: String,
    destination: String,
    amount: Option<u128>,
    invalid_reason: Option<String>,
}

/// What a decision is about, read from the transaction's bytes.
struct Decision {
    chain: String,
    kind: &'static str,
    asset: String,
    spend_id: String,
    /// As claimed, in the caller's order.
    request_ids: Vec<Uuid>,
    /// UTXO outpoints `txid:vout`.
    inputs: Vec<String>,
    outputs: Vec<policy::Output>,
    fee: u128,
}

/// Whether a decision approved a new spend or recognised one already approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Approved,
    Replay,
}

/// The cosigner's signing service: its configuration, policy, key B and database.
pub struct Cosigner {
    pool: PgPool,
    config: Arc<CosignerConfig>,
    policy: Policy,
    keys: Arc<CosignerKeys>,
    vault: Vault,
    /// Clients of the cosigner's own node(s) per UTXO chain with `rpc_urls`.
    nodes: BTreeMap<String, Vec<BitcoinRpc>>,
}

impl Cosigner {
    /// Builds the service, with a client of each UTXO chain's own node(s). Makes no request.
    ///
    /// Errors: a deny/allow entry that does not parse (see [`CosignerConfig::policy`]); an
    /// unusable node URL (refused by [`CosignerConfig::validate`] before).
    pub fn new(
        pool: PgPool,
        config: Arc<CosignerConfig>,
        keys: Arc<CosignerKeys>,
        vault: Vault,
    ) -> anyhow::Result<Self> {
        let policy = config.policy()?;
        let mut nodes = BTreeMap::new();
        for (name, chain) in &config.chains {
            if chain.kind.is_utxo() && !chain.rpc_urls.is_empty() {
                nodes.insert(name.clone(), chain.node_clients(name)?);
            }
        }
        Ok(Self {
            pool,
            config,
            policy,
            keys,
            vault,
            nodes,
        })
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The configuration.
    pub fn config(&self) -> &CosignerConfig {
        &self.config
    }

    fn chain_and_asset(
        &self,
        chain: &str,
        asset: &str,
        utxo: bool,
    ) -> Result<(&CosignerChainConfig, String, &CosignerAssetConfig), SignError> {
        let chain_config = self
            .config
            .chains
            .get(chain)
            .filter(|c| c.kind.is_utxo() == utxo)
            .ok_or_else(|| {
                let kind = if utxo { "UTXO" } else { "EVM" };
                refuse(
                    "unknown_chain",
                    format!("{chain:?} is not a configured {kind} chain"),
                )
            })?;
        let (symbol, asset_config) = self
            .config
            .asset(asset)
            .ok_or_else(|| refuse("unknown_asset", format!("asset {asset} has no policy")))?;
        if asset_config.chain != chain {
            return Err(refuse(
                "unknown_asset",
                format!(
                    "asset {symbol} is on chain {}, not {chain}",
                    asset_config.chain
                ),
            ));
        }
        Ok((chain_config, symbol, asset_config))
    }

    /// Checks and signs a UTXO spend with key B.
    ///
    /// # Errors
    /// [`SignError::Refused`] naming the rule (`unknown_chain`, `unknown_asset`,
    /// `no_requests`, `too_many_requests`, `malformed_psbt`, `foreign_spend`,
    /// `unknown_input`, `input_amount_mismatch`, `invalid_request`, `spend_mismatch`,
    /// `already_approved`, the policy rules of [`rule_of`], `not_signable`);
    /// [`SignError::NodeUnavailable`]; [`SignError::KeyUnavailable`]; [`SignError::Internal`].
    pub async fn sign_utxo(&self, request: &UtxoSignRequest) -> Result<UtxoSignReply, SignError> {
        let (_, symbol, _) = self.chain_and_asset(&request.chain, &request.asset, true)?;
        check_request_count(&request.request_ids)?;
        let wallet =
            self.keys.utxo_wallets.get(&request.chain).ok_or_else(|| {
                SignError::Internal(format!("no wallet for chain {}", request.chain))
            })?;
        let mut psbt =
            psbt::parse_psbt(&request.psbt).map_err(|e| refuse("malformed_psbt", e.to_string()))?;
        let described = spend::describe_spend(&psbt, wallet)
            .map_err(|e| refuse("foreign_spend", e.to_string()))?;
        let network = self
            .config
            .destination_network(&request.chain)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        // Before the decision lock: node calls must not hold it.
        self.check_inputs(&request.chain, &psbt, &described.inputs)
            .await?;

        let mut db = self.pool.begin().await?;
        lock(&mut db).await?;
        let known = load_requests(&mut db, &request.request_ids).await?;
        // scriptPubKey of every claimed, valid request → its canonical destination.
        let mut by_script: BTreeMap<ScriptBuf, String> = BTreeMap::new();
        for known in known.values().filter(|k| k.invalid_reason.is_none()) {
            if let Ok(parsed) = destination::parse_destination(network, &known.destination)
                && let Some(script) = parsed.script_pubkey()
            {
                by_script.insert(script.clone(), known.destination.clone());
            }
        }
        let outputs = described
            .outputs
            .iter()
            .map(|output| policy::Output {
                destination: by_script
                    .get(&output.script_pubkey)
                    .cloned()
                    .or_else(|| output.address.clone())
                    .unwrap_or_else(|| format!("script:{}", output.script_pubkey.to_hex_string())),
                amount: u128::from(output.amount.to_sat()),
                is_change: output.change_index.is_some(),
            })
            .collect();
        let decision = Decision {
            chain: request.chain.clone(),
            kind: "utxo",
            asset: symbol,
            spend_id: psbt.unsigned_tx.compute_txid().to_string(),
            request_ids: request.request_ids.clone(),
            inputs: described
                .inputs
                .iter()
                .map(|(outpoint, _)| outpoint.to_string())
                .collect(),
            outputs,
            fee: u128::from(described.fee.to_sat()),
        };
        let outcome = self.decide(&mut db, &decision, &known).await?;

        let mnemonic = self.keys.decrypt(&self.vault).await?;
        let seed = mnemonic.to_seed();
        drop(mnemonic);
        let signed = psbt::sign_psbt(&mut psbt, &seed, wallet);
        drop(seed);
        let report = signed.map_err(|e| refuse("not_signable", e.to_string()))?;
        if !report.skipped.is_empty() || report.signed.is_empty() {
            return Err(refuse(
                "not_signable",
                format!("inputs {:?} do not name key b's derivation", report.skipped),
            ));
        }
        db.commit().await?;
        tracing::info!(chain = %decision.chain, txid = %decision.spend_id, asset = %decision.asset,
            requests = ?decision.request_ids, replay = outcome == Outcome::Replay,
            "utxo spend signed with key b");
        Ok(UtxoSignReply {
            psbt: psbt::psbt_to_base64(&psbt),
        })
    }

    /// Checks every input of a UTXO spend against the cosigner's own node of `chain` (see
    /// the module documentation): `gettxout <txid> <n> false` must return the output with the
    /// value and scriptPubKey the PSBT claims. Does nothing for a chain without `rpc_urls`
    /// (only Bitcoin may have none: configuration validation requires them for Dash).
    ///
    /// # Errors
    /// `unknown_input` (not in the node's UTXO set: unknown, or spent in a block),
    /// `input_amount_mismatch` (value or scriptPubKey differ, naming the outpoint and both
    /// values); [`SignError::NodeUnavailable`] when no configured node answers.
    async fn check_inputs(
        &self,
        chain: &str,
        psbt: &Psbt,
        inputs: &[(OutPoint, Amount)],
    ) -> Result<(), SignError> {
        let Some(nodes) = self.nodes.get(chain) else {
            return Ok(());
        };
        for (index, (outpoint, claimed_value)) in inputs.iter().enumerate() {
            let claimed_script = claimed_script(psbt, index, outpoint).ok_or_else(|| {
                SignError::Internal(format!("input {index}: described without a spent output"))
            })?;
            let (node, found) = tx_out_from_any(nodes, outpoint).await?;
            let Some(found) = found else {
                return Err(refuse(
                    "unknown_input",
                    format!(
                        "input {outpoint} is not an unspent output in the UTXO set of the \
                         cosigner's node {node} (unknown, unconfirmed or already spent)"
                    ),
                ));
            };
            if found.value != *claimed_value {
                return Err(refuse(
                    "input_amount_mismatch",
                    format!(
                        "input {outpoint}: the psbt claims {} but node {node} has {}",
                        claimed_value.to_sat(),
                        found.value.to_sat()
                    ),
                ));
            }
            if found.script_pubkey != *claimed_script {
                return Err(refuse(
                    "input_amount_mismatch",
                    format!(
                        "input {outpoint}: the psbt claims scriptPubKey {} but node {node} has {}",
                        claimed_script.to_hex_string(),
                        found.script_pubkey.to_hex_string()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks and signs a Safe transaction with key B's Safe owner key.
    ///
    /// # Errors
    /// As [`Cosigner::sign_utxo`], with `one_request_per_safe_tx`, `not_a_plain_transfer`,
    /// `wrong_token` and `amount_overflow` instead of the PSBT rules.
    pub async fn sign_evm(&self, request: &EvmSignRequest) -> Result<EvmSignReply, SignError> {
        let (chain, symbol, asset) = self.chain_and_asset(&request.chain, &request.asset, false)?;
        if request.request_ids.len() != 1 {
            return Err(refuse(
                "one_request_per_safe_tx",
                format!(
                    "a Safe transaction pays exactly one request, {} were claimed",
                    request.request_ids.len()
                ),
            ));
        }
        let transfer = safe::describe_safe_tx(&request.safe_tx)
            .map_err(|e| refuse("not_a_plain_transfer", e.to_string()))?;
        if transfer.token != asset.contract {
            let show = |token: Option<Address>| {
                token.map_or_else(
                    || "the native coin".to_owned(),
                    |t| derivation::to_eip55(&t),
                )
            };
            return Err(refuse(
                "wrong_token",
                format!(
                    "the transaction moves {}, {symbol} is {}",
                    show(transfer.token),
                    show(asset.contract)
                ),
            ));
        }
        let amount = u128::try_from(transfer.amount).map_err(|_| {
            refuse(
                "amount_overflow",
                format!("amount {} does not fit in 128 bits", transfer.amount),
            )
        })?;
        let (Some(chain_id), Some(safe_address)) = (chain.chain_id, chain.safe_address) else {
            return Err(SignError::Internal(
                "validated: EVM chains have chain_id and safe_address".into(),
            ));
        };
        let hash = safe::safe_tx_hash(&request.safe_tx, chain_id, safe_address);
        let decision = Decision {
            chain: request.chain.clone(),
            kind: "evm",
            asset: symbol,
            spend_id: hash.to_string(),
            request_ids: request.request_ids.clone(),
            inputs: Vec::new(),
            outputs: vec![policy::Output {
                destination: derivation::to_eip55(&transfer.destination),
                amount,
                is_change: false,
            }],
            fee: 0,
        };

        let mut db = self.pool.begin().await?;
        lock(&mut db).await?;
        let known = load_requests(&mut db, &request.request_ids).await?;
        let outcome = self.decide(&mut db, &decision, &known).await?;

        let mnemonic = self.keys.decrypt(&self.vault).await?;
        let master = MasterKey::from_seed(&mnemonic.to_seed())
            .map_err(|e| SignError::Internal(format!("key b: {e}")))?;
        drop(mnemonic);
        let key = master
            .evm_key_at(SAFE_OWNER_BRANCH, 0)
            .map_err(|e| SignError::Internal(format!("key b: {e}")))?;
        drop(master);
        if key.address() != self.keys.safe_owner {
            return Err(SignError::Internal(
                "key b derives another safe owner than its stored xpub".into(),
            ));
        }
        let signature = safe::sign_safe_tx(&key, hash);
        let owner = key.address();
        drop(key);
        assert_eq!(safe::recover_owner(hash, &signature).ok(), Some(owner));
        db.commit().await?;
        tracing::info!(chain = %decision.chain, safe_tx_hash = %decision.spend_id,
            asset = %decision.asset, requests = ?decision.request_ids,
            replay = outcome == Outcome::Replay, "safe transaction signed with key b");
        Ok(EvmSignReply {
            signature: format!("0x{}", hex::encode(signature)),
            owner,
        })
    }

    /// Decides on `decision` inside the open transaction `db` (which holds the decision
    /// lock) and, when approved, writes the spend and its approvals to it.
    async fn decide(
        &self,
        db: &mut PgConnection,
        decision: &Decision,
        known: &BTreeMap<Uuid, KnownRequest>,
    ) -> Result<Outcome, SignError> {
        let mut sorted_ids = decision.request_ids.clone();
        sorted_ids.sort();

        // The identical transaction again: sign without counting anything twice.
        let existing: Option<(Vec<Uuid>,)> = sqlx::query_as(
            "SELECT request_ids FROM cosigner_spends WHERE chain = $1 AND spend_id = $2",
        )
        .bind(&decision.chain)
        .bind(&decision.spend_id)
        .fetch_optional(&mut *db)
        .await?;
        if let Some((approved_ids,)) = existing {
            if approved_ids == sorted_ids {
                return Ok(Outcome::Replay);
            }
            return Err(refuse(
                "spend_mismatch",
                format!(
                    "transaction {} was approved for requests {approved_ids:?}, not {sorted_ids:?}",
                    decision.spend_id
                ),
            ));
        }

        for id in &decision.request_ids {
            if let Some(KnownRequest {
                invalid_reason: Some(reason),
                ..
            }) = known.get(id)
            {
                return Err(refuse(
                    "invalid_request",
                    format!("request {id} can never be signed: {reason}"),
                ));
            }
        }

        // Earlier approvals of the claimed requests: only a conflicting UTXO replacement may
        // approve them again.
        let earlier: Vec<(Uuid, String, String, Vec<String>)> = sqlx::query_as(
            "SELECT a.request_id, s.spend_id, s.kind, s.inputs
             FROM cosigner_approvals a
             JOIN cosigner_spends s ON s.chain = a.chain AND s.spend_id = a.spend_id
             WHERE a.request_id = ANY($1)
             ORDER BY s.approved_at",
        )
        .bind(&sorted_ids)
        .fetch_all(&mut *db)
        .await?;
        let ours: BTreeSet<&str> = decision.inputs.iter().map(String::as_str).collect();
        let mut replaced: BTreeSet<Uuid> = BTreeSet::new();
        for (id, spend_id, kind, inputs) in &earlier {
            let conflicts = decision.kind == "utxo"
                && kind == "utxo"
                && inputs.iter().any(|input| ours.contains(input.as_str()));
            if !conflicts {
                return Err(refuse(
                    "already_approved",
                    format!("request {id} already approved in tx {spend_id}"),
                ));
            }
            replaced.insert(*id);
        }

        let known_unpaid: Vec<policy::WithdrawalRequest> = known
            .values()
            .filter_map(|k| {
                Some(policy::WithdrawalRequest {
                    id: k.id.to_string(),
                    asset: k.asset.clone(),
                    destination: k.destination.clone(),
                    amount: k.amount?,
                })
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        let history = load_history(db, &decision.asset, now, &replaced).await?;
        let proposed = policy::ProposedSpend {
            asset: decision.asset.clone(),
            outputs: decision.outputs.clone(),
            fee: decision.fee,
            requests: decision.request_ids.iter().map(Uuid::to_string).collect(),
        };
        let now_secs = u64::try_from(now.unix_timestamp()).unwrap_or_default();
        let approval = policy::evaluate(&self.policy, &proposed, &known_unpaid, &history, now_secs)
            .map_err(|refusal| refuse(rule_of(&refusal), refusal.to_string()))?;
        assert_eq!(approval.payouts.len(), decision.request_ids.len());

        sqlx::query(
            "INSERT INTO cosigner_spends (chain, spend_id, kind, asset, request_ids, inputs, fee,
                 approved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7::NUMERIC, $8)",
        )
        .bind(&decision.chain)
        .bind(&decision.spend_id)
        .bind(decision.kind)
        .bind(&decision.asset)
        .bind(&sorted_ids)
        .bind(&decision.inputs)
        .bind(decision.fee.to_string())
        .bind(now)
        .execute(&mut *db)
        .await?;
        for payout in &approval.payouts {
            let id = Uuid::parse_str(&payout.request_id)
                .map_err(|e| SignError::Internal(format!("request id: {e}")))?;
            sqlx::query(
                "INSERT INTO cosigner_approvals (request_id, chain, spend_id, asset, destination,
                     amount, approved_at)
                 VALUES ($1, $2, $3, $4, $5, $6::NUMERIC, $7)",
            )
            .bind(id)
            .bind(&decision.chain)
            .bind(&decision.spend_id)
            .bind(&payout.asset)
            .bind(&payout.destination)
            .bind(payout.amount.to_string())
            .bind(now)
            .execute(&mut *db)
            .await?;
        }
        Ok(Outcome::Approved)
    }
}

/// The scriptPubKey input `index` of `psbt` claims to spend (`witness_utxo`, else the
/// `non_witness_utxo` output), as [`spend::describe_spend`] read it.
fn claimed_script<'a>(psbt: &'a Psbt, index: usize, outpoint: &OutPoint) -> Option<&'a ScriptBuf> {
    let input = psbt.inputs.get(index)?;
    if let Some(utxo) = &input.witness_utxo {
        return Some(&utxo.script_pubkey);
    }
    let previous = input.non_witness_utxo.as_ref()?;
    previous
        .output
        .get(usize::try_from(outpoint.vout).ok()?)
        .map(|out| &out.script_pubkey)
}

/// `gettxout <outpoint> false` on the first of `nodes` that answers, with that node's
/// `host:port`.
///
/// Errors: [`SignError::NodeUnavailable`] with every node's error when none answers.
async fn tx_out_from_any(
    nodes: &[BitcoinRpc],
    outpoint: &OutPoint,
) -> Result<(String, Option<coinhub_chains::bitcoin::rpc::UnspentOutput>), SignError> {
    let mut errors: Vec<RpcError> = Vec::new();
    for node in nodes {
        // include_mempool = false: see the module documentation (BIP125 replacements).
        match node.get_tx_out(outpoint, false).await {
            Ok(found) => return Ok((node.node().to_owned(), found)),
            Err(error) => {
                tracing::warn!(node = %node.node(), %outpoint, %error,
                    "cosigner node cannot check an input");
                errors.push(error);
            }
        }
    }
    let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(SignError::NodeUnavailable(if reasons.is_empty() {
        "no node configured".to_owned()
    } else {
        reasons.join("; ")
    }))
}

fn check_request_count(ids: &[Uuid]) -> Result<(), SignError> {
    if ids.is_empty() {
        return Err(refuse(
            "no_requests",
            "a spend must pay at least one withdrawal request",
        ));
    }
    if ids.len() > REQUESTS_PER_SPEND_MAX {
        return Err(refuse(
            "too_many_requests",
            format!(
                "{} requests claimed, at most {REQUESTS_PER_SPEND_MAX}",
                ids.len()
            ),
        ));
    }
    Ok(())
}

/// Takes the decision lock for the rest of the transaction.
async fn lock(db: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DECISION_LOCK_KEY)
        .execute(db)
        .await
        .map(|_| ())
}

/// `cosigner_requests` columns: id, asset, destination, amount, invalid reason.
type RequestRow = (Uuid, String, String, Option<String>, Option<String>);

/// The stored requests among `ids`, by id (absent ids are unknown requests).
async fn load_requests(
    db: &mut PgConnection,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, KnownRequest>, SignError> {
    let rows: Vec<RequestRow> = sqlx::query_as(
        "SELECT request_id, asset, destination, amount::TEXT, invalid_reason
         FROM cosigner_requests WHERE request_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, asset, destination, amount, invalid_reason)| {
            let amount = amount
                .map(|text| text.parse::<u128>())
                .transpose()
                .map_err(|e| SignError::Internal(format!("stored amount of {id}: {e}")))?;
            Ok((
                id,
                KnownRequest {
                    id,
                    asset,
                    destination,
                    amount,
                    invalid_reason,
                },
            ))
        })
        .collect()
}

/// `asset`'s payouts approved within the 24 h before `now`, one per request (its latest
/// approval), leaving out the requests in `replaced` (their earlier transactions are being
/// replaced, so this decision counts them once).
async fn load_history(
    db: &mut PgConnection,
    asset: &str,
    now: OffsetDateTime,
    replaced: &BTreeSet<Uuid>,
) -> Result<policy::History, SignError> {
    let since = now - time::Duration::seconds(policy::WINDOW_SECS as i64);
    let rows: Vec<(Uuid, String, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT DISTINCT ON (request_id) request_id, asset, destination, amount::TEXT, approved_at
         FROM cosigner_approvals
         WHERE asset = $1 AND approved_at > $2
         ORDER BY request_id, approved_at DESC",
    )
    .bind(asset)
    .bind(since)
    .fetch_all(db)
    .await?;
    let mut payouts = Vec::with_capacity(rows.len());
    for (id, asset, destination, amount, approved_at) in rows {
        if replaced.contains(&id) {
            continue;
        }
        payouts.push(policy::Payout {
            request_id: id.to_string(),
            asset,
            destination,
            amount: amount
                .parse()
                .map_err(|e| SignError::Internal(format!("stored amount of {id}: {e}")))?,
            approved_at: u64::try_from(approved_at.unix_timestamp()).unwrap_or_default(),
        });
    }
    Ok(policy::History { payouts })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every policy refusal has its own rule name.
    #[test]
    fn policy_rules_have_names() {
        let refusal = Refusal::Over24h {
            asset: "BTC".into(),
            previous: 1,
            this_spend: 2,
            max: 2,
        };
        assert_eq!(rule_of(&refusal), "over_24h");
        assert_eq!(rule_of(&Refusal::NoOutputs), "no_outputs");
    }
}
