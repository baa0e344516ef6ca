//! Withdrawal transactions of the 2-of-3 UTXO wallets (pure logic, no I/O): build, fee-bump
//! and describe the unsigned [BIP174](https://github.com/bitcoin/bips/blob/master/bip-0174.mediawiki)
//! PSBTs that [`crate::psbt::sign_psbt`] signs.
//!
//! - [`plan_spend`]: coin selection (the `bdk_coin_select` crate, largest UTXO first, made
//!   exact with integer arithmetic) for a batch of [`Payout`]s at a fee rate, a change output
//!   on the wallet's change branch when the rest is not dust, and a PSBT whose inputs carry
//!   everything a signer checks: `bip32_derivation` of all three keys, `witness_script`
//!   (`wsh`) or `redeem_script` (`sh`), and `witness_utxo`.
//! - [`bump_fee`]: a [BIP125](https://github.com/bitcoin/bips/blob/master/bip-0125.mediawiki)
//!   replacement of a planned Bitcoin spend: same inputs, same payouts, a smaller change.
//! - [`describe_spend`]: the cosigner's view of a PSBT it is asked to sign, checked from the
//!   PSBT's own bytes: which inputs (all must be the wallet's), what every output pays, which
//!   output is change (proved by derivation, never trusted), and the exact fee.
//!
//! Amounts are `bitcoin::Amount`s in the chain's base unit: satoshi on Bitcoin, duff on Dash
//! (both 10^-8 of a coin). Fee rates are `bitcoin::FeeRate` (satoshi or duff per 1000 weight
//! units; on Dash, which has no segwit, one virtual byte is one byte).
//!
//! Size estimates assume the worst case of a fully signed input: two 73-byte signatures
//! (DER plus sighash byte) and the 105-byte `sortedmulti(2, 3 keys)` script. A `wsh` input
//! has an empty scriptSig and the witness `[<empty>, sig, sig, witness_script]` (256 bytes,
//! segwit v0, [BIP143](https://github.com/bitcoin/bips/blob/master/bip-0143.mediawiki));
//! an `sh` input has the scriptSig `OP_0 <sig> <sig> <redeem_script>` (256 bytes, pushed with
//! `OP_PUSHDATA1` for the script). Real signatures (low R and low S) are 71 bytes, so the
//! signed transaction is never larger than [`SpendPlan::vsize`].
//!
//! # Dash (`sh`) inputs and `witness_utxo`
//!
//! BIP174 wants a non-segwit input to carry its whole previous transaction in
//! `non_witness_utxo`. The wallet does not keep previous transactions, so Coinhub's `sh`
//! PSBTs carry the spent output (amount and scriptPubKey) in `witness_utxo` instead: a
//! convention shared by Coinhub's signer ([`crate::psbt::sign_psbt`]) and cosigner
//! ([`describe_spend`]); other BIP174 tools may not accept such a PSBT. The legacy sighash
//! that Dash signs does not commit to input amounts, so a signature does not prove the
//! amount: **the cosigner must check every `sh` input's outpoint and amount against its own
//! view of the chain** (e.g. its node's `gettxout`) before signing, or a lying proposer can
//! make it sign a transaction whose real fee is far larger than [`SpendDescription::fee`].
//! On Bitcoin (`wsh`) the BIP143 sighash commits to the amount, so a wrong `witness_utxo`
//! only produces invalid signatures.
//!
//! # Replace-by-fee
//!
//! Bitcoin spends signal BIP125 replaceability on every input (sequence `0xfffffffd`).
//! Dash has no replace-by-fee: its inputs use sequence `0xffffffff` and [`bump_fee`] refuses
//! `sh` wallets.

use std::collections::{BTreeMap, BTreeSet};

use bdk_coin_select::{Candidate, CoinSelector, Target, TargetFee, TargetOutputs};
use bitcoin::absolute::LockTime;
use bitcoin::bip32::{ChildNumber, KeySource};
use bitcoin::psbt::{Input, Output, Psbt};
use bitcoin::secp256k1::{PublicKey, Secp256k1, Verification};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};

use crate::psbt::split_account_path;
use crate::utxo::{Branch, MultisigScript, UtxoError, UtxoNetwork, UtxoWallet, dash_address};

/// Outputs below this many satoshis (duffs on Dash) are dust: no payout may be smaller, and a
/// change output that would be smaller is left out (its value goes to the fee). 546 is Bitcoin
/// Core's dust threshold for P2PKH outputs at the default 3 sat/vB dust relay fee, and is used
/// for both chains.
pub const DUST_LIMIT_SAT: u64 = 546;

/// BIP125 rule 4's incremental relay fee rate: 1 sat/vB (Bitcoin Core's default
/// `-incrementalrelayfee`).
pub const INCREMENTAL_RELAY_FEE_RATE: FeeRate = FeeRate::from_sat_per_vb_u32(1);

/// Upper bound of one ECDSA signature with its sighash byte, as estimated by the wallet:
/// 72 bytes of DER (33-byte R, 33-byte S) plus one sighash byte.
pub const MAX_SIGNATURE_BYTES: u64 = 73;

/// Length of the `sortedmulti(2, 3 keys)` script: `OP_2 <33> <33> <33> OP_3 OP_CHECKMULTISIG`.
pub const MULTISIG_SCRIPT_BYTES: u64 = 105;

/// The sequence of every input of a Bitcoin (`wsh`) spend: `0xfffffffd`, signalling BIP125
/// replaceability (below `0xfffffffe`) without enabling relative locktimes (BIP68 disable bit
/// set).
pub const RBF_SEQUENCE: Sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;

/// At most this many UTXOs are considered by one [`plan_spend`] (a limit on work; a standard
/// transaction of 100 kvB fits about 580 `sh` or 1 000 `wsh` inputs of this wallet anyway).
pub const MAX_CANDIDATE_UTXOS: usize = 10_000;

/// Why a spend could not be planned, bumped or described.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpendError {
    /// The wallet's script type has no spend support: only `wsh` and `sh` are built.
    #[error("cannot build spends of {script} wallets, only wsh and sh")]
    ScriptNotSupported {
        /// The wallet's script type.
        script: MultisigScript,
    },
    /// No payouts were given.
    #[error("a spend needs at least one payout")]
    NoPayouts,
    /// Two payouts have the same request id.
    #[error("request {request_id} is listed twice")]
    DuplicateRequest {
        /// The repeated request id.
        request_id: String,
    },
    /// A payout is below [`DUST_LIMIT_SAT`].
    #[error("request {request_id} pays {amount}, below the dust limit of {DUST_LIMIT_SAT} sat")]
    PayoutBelowDust {
        /// The request id.
        request_id: String,
        /// The payout, satoshi (duff).
        amount: Amount,
    },
    /// The same outpoint is offered twice as a UTXO.
    #[error("utxo {outpoint} is listed twice")]
    DuplicateUtxo {
        /// The repeated outpoint.
        outpoint: OutPoint,
    },
    /// More than [`MAX_CANDIDATE_UTXOS`] UTXOs were offered.
    #[error("{count} utxos offered, at most {MAX_CANDIDATE_UTXOS} are considered")]
    TooManyUtxos {
        /// How many were offered.
        count: usize,
    },
    /// The UTXOs cannot pay the payouts plus the fee. `needed` is the payouts plus the fee of
    /// a transaction spending every UTXO without change; `available` is the sum of the UTXOs.
    #[error("insufficient funds: need {needed} (payouts + fee), have {available}")]
    InsufficientFunds {
        /// Payouts plus fee, satoshi (duff).
        needed: Amount,
        /// Sum of the offered UTXOs, satoshi (duff).
        available: Amount,
    },
    /// Dash (`sh`) transactions cannot be replaced (no BIP125 on Dash).
    #[error("{script} spends do not signal replace-by-fee and cannot be bumped")]
    RbfNotSupported {
        /// The wallet's script type.
        script: MultisigScript,
    },
    /// The change output (plus the old fee) cannot pay the replacement's fee. Inputs are
    /// never added by [`bump_fee`].
    #[error(
        "change too small to bump: the replacement needs a fee of {required_fee}, at most {available} is available"
    )]
    ChangeTooSmallToBump {
        /// The fee the replacement needs without a change output, satoshi.
        required_fee: Amount,
        /// Old fee plus old change: the most the replacement can pay, satoshi.
        available: Amount,
    },
    /// A [`SpendPlan`] given to [`bump_fee`] is not consistent with its own PSBT.
    #[error("inconsistent spend plan: {reason}")]
    InvalidPlan {
        /// What does not match.
        reason: String,
    },
    /// An input of the PSBT does not spend the wallet: no `bip32_derivation` entry names a
    /// path under one of the wallet's BIP48 accounts, the entries disagree, or the spent
    /// output's scriptPubKey is not the wallet's script at that path.
    #[error("input {index} does not spend this wallet")]
    ForeignInput {
        /// Index of the input.
        index: usize,
    },
    /// An input has neither `witness_utxo` nor `non_witness_utxo`, so its amount is unknown.
    #[error("input {index} has no witness_utxo or non_witness_utxo")]
    MissingUtxo {
        /// Index of the input.
        index: usize,
    },
    /// An input's `non_witness_utxo` does not hash to the outpoint's txid, lacks the spent
    /// output, or disagrees with `witness_utxo`.
    #[error("input {index}: non_witness_utxo does not match the outpoint or witness_utxo")]
    UtxoMismatch {
        /// Index of the input.
        index: usize,
    },
    /// A sum of amounts overflowed (no legitimate transaction does this).
    #[error("{what} overflows")]
    AmountOverflow {
        /// Which sum.
        what: &'static str,
    },
    /// The outputs pay more than the inputs.
    #[error("outputs {output_total} exceed inputs {input_total}")]
    NegativeFee {
        /// Sum of the inputs, satoshi (duff).
        input_total: Amount,
        /// Sum of the outputs, satoshi (duff).
        output_total: Amount,
    },
    /// Deriving a wallet script failed.
    #[error(transparent)]
    Wallet(#[from] UtxoError),
    /// A BIP32 public derivation step failed (probability below 2^-127).
    #[error("bip32 derivation failed: {0}")]
    Bip32(#[from] bitcoin::bip32::Error),
}

/// A UTXO of the wallet that a spend may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalletUtxo {
    /// The output spent.
    pub outpoint: OutPoint,
    /// Its value, satoshi (duff on Dash).
    pub amount: Amount,
    /// The branch of the wallet address it pays.
    pub branch: Branch,
    /// The index below the branch (non-hardened).
    pub index: u32,
}

/// One withdrawal request to pay.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Payout {
    /// The withdrawal request's id (unique within a spend).
    pub request_id: String,
    /// The destination's output script.
    pub script_pubkey: ScriptBuf,
    /// The amount, satoshi (duff on Dash); at least [`DUST_LIMIT_SAT`].
    pub amount: Amount,
}

/// The change output of a spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChangeOutput {
    /// Its output index.
    pub vout: u32,
    /// Its value, satoshi (duff); at least [`DUST_LIMIT_SAT`].
    pub amount: Amount,
    /// Its index on the wallet's change branch (`…/1/index`).
    pub index: u32,
}

/// A planned (unsigned) spend.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendPlan {
    /// The unsigned PSBT (version 0): every input with the `bip32_derivation` of all three
    /// keys, `witness_script` (`wsh`) or `redeem_script` (`sh`) and `witness_utxo` (also for
    /// `sh`, see the module documentation); the change output with its `bip32_derivation` and
    /// script. Outputs: the payouts in the order given, then the change.
    pub psbt: Psbt,
    /// The UTXOs spent, in PSBT input order.
    pub inputs: Vec<WalletUtxo>,
    /// `(request_id, vout)` of every payout, in the order given.
    pub payout_vouts: Vec<(String, u32)>,
    /// The change output, if any.
    pub change: Option<ChangeOutput>,
    /// Inputs minus outputs, satoshi (duff).
    pub fee: Amount,
    /// Estimated virtual size of the fully signed transaction, vbytes (bytes on Dash); an
    /// upper bound of the real size.
    pub vsize: u64,
}

/// One output of a described spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedOutput {
    /// Its output index.
    pub vout: u32,
    /// Its output script.
    pub script_pubkey: ScriptBuf,
    /// Its address in the wallet network's encoding (Dash via [`dash_address`]); `None` for a
    /// script without an address.
    pub address: Option<String>,
    /// Its value, satoshi (duff).
    pub amount: Amount,
    /// `Some(index)` if the output is the wallet's change at `…/1/index`: its own
    /// `bip32_derivation` names that change path and the script derived there equals the
    /// output's script.
    pub change_index: Option<u32>,
}

/// What a PSBT spends and pays, as checked by [`describe_spend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendDescription {
    /// Every input's outpoint and amount, satoshi (duff), in input order.
    pub inputs: Vec<(OutPoint, Amount)>,
    /// Every output, in output order.
    pub outputs: Vec<DescribedOutput>,
    /// Sum of the inputs, satoshi (duff).
    pub input_total: Amount,
    /// Inputs minus outputs, satoshi (duff).
    pub fee: Amount,
}

/// Plans a spend of `wallet` paying `payouts` from some of `utxos` at `fee_rate`, with change
/// (if not dust) to the change address `change_index`.
///
/// UTXOs are sorted by value (largest first, ties by outpoint) so the result does not depend
/// on their order, and selected with `bdk_coin_select` until the payouts and the fee of the
/// estimated signed size are covered; the choice is then confirmed with integer arithmetic
/// (fee = `fee_rate` × estimated vsize, rounded up). If what remains after the fee of a
/// transaction with change is at least [`DUST_LIMIT_SAT`], it becomes the change output;
/// otherwise there is no change and the rest goes to the fee. Inputs are in selection order,
/// outputs are the payouts in the order given and then the change. Transaction version 2,
/// locktime 0; sequences per the module documentation (BIP125 on Bitcoin).
///
/// # Errors
/// [`SpendError::ScriptNotSupported`] for `sh(wsh)` wallets; [`SpendError::NoPayouts`],
/// [`SpendError::DuplicateRequest`], [`SpendError::PayoutBelowDust`],
/// [`SpendError::DuplicateUtxo`], [`SpendError::TooManyUtxos`] for bad arguments;
/// [`SpendError::InsufficientFunds`] if all UTXOs together cannot pay; [`SpendError::Wallet`]
/// if an index is hardened; [`SpendError::AmountOverflow`].
pub fn plan_spend(
    wallet: &UtxoWallet,
    utxos: &[WalletUtxo],
    payouts: &[Payout],
    fee_rate: FeeRate,
    change_index: u32,
) -> Result<SpendPlan, SpendError> {
    let script_type = supported_script(wallet)?;
    check_payouts(payouts)?;
    if utxos.len() > MAX_CANDIDATE_UTXOS {
        return Err(SpendError::TooManyUtxos { count: utxos.len() });
    }
    let mut sorted = utxos.to_vec();
    sorted.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.outpoint.cmp(&b.outpoint)));
    let mut seen = BTreeSet::new();
    for utxo in &sorted {
        if !seen.insert(utxo.outpoint) {
            return Err(SpendError::DuplicateUtxo {
                outpoint: utxo.outpoint,
            });
        }
    }
    // Derive the change script first: a hardened change index fails before any selection.
    let change_script = wallet.script_pubkey(Branch::Change, change_index)?;
    let payout_outputs: Vec<TxOut> = payouts
        .iter()
        .map(|payout| TxOut {
            value: payout.amount,
            script_pubkey: payout.script_pubkey.clone(),
        })
        .collect();
    let payout_total = sum(payouts.iter().map(|p| p.amount), "the payout total")?;
    let available = sum(sorted.iter().map(|u| u.amount), "the utxo total")?;

    let insufficient = || -> Result<SpendError, SpendError> {
        let fee = fee_for(
            fee_rate,
            estimate_vsize(script_type, sorted.len(), &payout_outputs),
        )?;
        Ok(SpendError::InsufficientFunds {
            needed: payout_total
                .checked_add(fee)
                .ok_or(SpendError::AmountOverflow {
                    what: "payouts plus fee",
                })?,
            available,
        })
    };

    let candidates: Vec<Candidate> = sorted
        .iter()
        .map(|utxo| {
            Candidate::new(
                utxo.amount.to_sat(),
                satisfaction_weight_wu(script_type),
                script_type == MultisigScript::Wsh,
            )
        })
        .collect();
    let target = Target {
        fee: TargetFee::from_feerate(bdk_coin_select::FeeRate::from_wu(
            fee_rate.to_sat_per_kwu(),
            1000,
        )),
        outputs: TargetOutputs::fund_outputs(
            payout_outputs
                .iter()
                .map(|output| (output.weight().to_wu(), output.value.to_sat())),
        ),
    };
    let mut selector = CoinSelector::new(&candidates);
    // Selects the shortest prefix (largest first) that meets the target, or every candidate
    // if none does. `bdk_coin_select` estimates fees in `f32`, so the exact integer check
    // below decides, extending the selection if needed.
    let _met = selector.select_until_target_met(target).is_ok();
    let (selected, settled) = loop {
        let selected: Vec<WalletUtxo> = selector.apply_selection(&sorted).cloned().collect();
        if let Some(settled) = settle(
            script_type,
            &selected,
            &payout_outputs,
            payout_total,
            &change_script,
            fee_rate,
            None,
        )? {
            break (selected, settled);
        }
        if !selector.select_next() {
            return Err(insufficient()?);
        }
    };
    let plan = build_plan(
        wallet,
        selected,
        payouts.iter().map(|p| p.request_id.clone()).collect(),
        payout_outputs,
        settled.change.map(|amount| (change_index, amount)),
        settled.fee,
        settled.vsize,
    )?;
    Ok(plan)
}

/// Replaces `previous` (a Bitcoin spend planned by [`plan_spend`] or an earlier bump) with one
/// paying `new_fee_rate`, per BIP125: the same inputs in the same order and the same payouts
/// in the same order; only the change output shrinks, or is left out when it would fall
/// below [`DUST_LIMIT_SAT`] (its value then goes to the fee).
///
/// The new fee is the larger of `new_fee_rate` × new vsize and BIP125 rule 4's minimum, the
/// old fee plus [`INCREMENTAL_RELAY_FEE_RATE`] (1 sat/vB) × new vsize; so it is always above
/// the old fee, and because the vsize never grows the fee rate is above the old one too
/// (rule 6 of Bitcoin Core's replacement policy).
///
/// # Errors
/// [`SpendError::RbfNotSupported`] for an `sh` (Dash) wallet;
/// [`SpendError::ScriptNotSupported`] for `sh(wsh)`; [`SpendError::ChangeTooSmallToBump`] if
/// the old fee plus the change cannot pay the new fee (no inputs are added);
/// [`SpendError::InvalidPlan`] if `previous` does not match its own PSBT;
/// [`SpendError::Wallet`], [`SpendError::AmountOverflow`].
pub fn bump_fee(
    wallet: &UtxoWallet,
    previous: &SpendPlan,
    new_fee_rate: FeeRate,
) -> Result<SpendPlan, SpendError> {
    if wallet.script() == MultisigScript::Sh {
        return Err(SpendError::RbfNotSupported {
            script: wallet.script(),
        });
    }
    let script_type = supported_script(wallet)?;
    let tx = &previous.psbt.unsigned_tx;
    let invalid = |reason: &str| SpendError::InvalidPlan {
        reason: reason.to_owned(),
    };
    if tx.input.len() != previous.inputs.len()
        || tx
            .input
            .iter()
            .zip(&previous.inputs)
            .any(|(txin, utxo)| txin.previous_output != utxo.outpoint)
    {
        return Err(invalid("inputs differ from the psbt's"));
    }
    let change_outputs = usize::from(previous.change.is_some());
    if tx.output.len() != previous.payout_vouts.len() + change_outputs {
        return Err(invalid("output count differs from payouts plus change"));
    }
    let mut payout_outputs = Vec::with_capacity(previous.payout_vouts.len());
    for (_, vout) in &previous.payout_vouts {
        let output = usize::try_from(*vout)
            .ok()
            .and_then(|vout| tx.output.get(vout))
            .ok_or_else(|| invalid("a payout vout is out of range"))?;
        payout_outputs.push(output.clone());
    }
    let change_index = match previous.change {
        Some(change) => {
            let output = usize::try_from(change.vout)
                .ok()
                .and_then(|vout| tx.output.get(vout))
                .ok_or_else(|| invalid("the change vout is out of range"))?;
            if output.value != change.amount
                || output.script_pubkey != wallet.script_pubkey(Branch::Change, change.index)?
            {
                return Err(invalid("the change output differs from the psbt's"));
            }
            Some(change.index)
        }
        None => None,
    };
    let input_total = sum(previous.inputs.iter().map(|u| u.amount), "the input total")?;
    let payout_total = sum(payout_outputs.iter().map(|o| o.value), "the payout total")?;
    let output_total = sum(tx.output.iter().map(|o| o.value), "the output total")?;
    if input_total.checked_sub(output_total) != Some(previous.fee) {
        return Err(invalid("the fee is not inputs minus outputs"));
    }
    let available = input_total
        .checked_sub(payout_total)
        .ok_or_else(|| invalid("payouts exceed inputs"))?;

    let no_change = || -> Result<SpendError, SpendError> {
        let vsize = estimate_vsize(script_type, previous.inputs.len(), &payout_outputs);
        Ok(SpendError::ChangeTooSmallToBump {
            required_fee: replacement_fee(new_fee_rate, previous.fee, vsize)?,
            available,
        })
    };
    let Some(change_index) = change_index else {
        return Err(no_change()?);
    };
    let change_script = wallet.script_pubkey(Branch::Change, change_index)?;
    let Some(settled) = settle(
        script_type,
        &previous.inputs,
        &payout_outputs,
        payout_total,
        &change_script,
        new_fee_rate,
        Some(previous.fee),
    )?
    else {
        return Err(no_change()?);
    };
    assert!(settled.fee > previous.fee, "bip125 rule 3: the fee grows");
    assert!(
        settled.vsize <= previous.vsize,
        "same inputs and outputs, at most one output fewer"
    );
    build_plan(
        wallet,
        previous.inputs.clone(),
        previous
            .payout_vouts
            .iter()
            .map(|(id, _)| id.clone())
            .collect(),
        payout_outputs,
        settled.change.map(|amount| (change_index, amount)),
        settled.fee,
        settled.vsize,
    )
}

/// The cosigner's view of `psbt`, checked from its own bytes against `wallet`.
///
/// Every input must spend the wallet: from its `bip32_derivation`, the entries whose
/// fingerprint is one of the wallet's keys and whose path is `account/branch/index` under that
/// key's BIP48 account must all name the same `branch/index`, and the spent output's
/// scriptPubKey (`witness_utxo`, or the `non_witness_utxo` output) must equal
/// [`UtxoWallet::script_pubkey`] there. A `non_witness_utxo`, if present, must hash to the
/// outpoint's txid and agree with `witness_utxo`. An output is change only if its own
/// `bip32_derivation` names a change path (`account/1/index`) whose derived script equals the
/// output's script; anything else (including a lying derivation) is reported as a plain
/// output with `change_index: None`. The fee is the input total minus the output total.
///
/// For `sh` (Dash) inputs, the amounts come from the PSBT and are not committed to by the
/// signatures: check them against the chain (see the module documentation).
///
/// # Errors
/// [`SpendError::ForeignInput`], [`SpendError::MissingUtxo`], [`SpendError::UtxoMismatch`]
/// per input; [`SpendError::AmountOverflow`] and [`SpendError::NegativeFee`] for the totals;
/// [`SpendError::Wallet`] if deriving a script fails.
pub fn describe_spend(psbt: &Psbt, wallet: &UtxoWallet) -> Result<SpendDescription, SpendError> {
    let tx = &psbt.unsigned_tx;
    assert_eq!(
        psbt.inputs.len(),
        tx.input.len(),
        "rust-bitcoin's Psbt keeps one input map per input"
    );
    assert_eq!(psbt.outputs.len(), tx.output.len());

    let mut inputs = Vec::with_capacity(tx.input.len());
    for (index, (txin, psbt_input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
        let outpoint = txin.previous_output;
        let mut spent_output = None;
        if let Some(previous) = &psbt_input.non_witness_utxo {
            let spent = usize::try_from(outpoint.vout)
                .ok()
                .and_then(|vout| previous.output.get(vout));
            if previous.compute_txid() != outpoint.txid
                || spent.is_none()
                || psbt_input
                    .witness_utxo
                    .as_ref()
                    .is_some_and(|utxo| spent != Some(utxo))
            {
                return Err(SpendError::UtxoMismatch { index });
            }
            spent_output = spent;
        }
        let utxo = psbt_input
            .witness_utxo
            .as_ref()
            .or(spent_output)
            .ok_or(SpendError::MissingUtxo { index })?;
        let mut paths = wallet_paths(wallet, &psbt_input.bip32_derivation);
        paths.dedup();
        let [(branch, address_index)] = paths[..] else {
            return Err(SpendError::ForeignInput { index });
        };
        if wallet.script_pubkey(branch, address_index)? != utxo.script_pubkey {
            return Err(SpendError::ForeignInput { index });
        }
        inputs.push((outpoint, utxo.value));
    }

    let mut outputs = Vec::with_capacity(tx.output.len());
    for (vout, (txout, psbt_output)) in tx.output.iter().zip(&psbt.outputs).enumerate() {
        let mut change_index = None;
        for (branch, index) in wallet_paths(wallet, &psbt_output.bip32_derivation) {
            if branch == Branch::Change
                && wallet.script_pubkey(branch, index)? == txout.script_pubkey
            {
                change_index = Some(index);
                break;
            }
        }
        outputs.push(DescribedOutput {
            vout: u32::try_from(vout).expect("a transaction has fewer than 2^32 outputs"),
            script_pubkey: txout.script_pubkey.clone(),
            address: address_of(&txout.script_pubkey, wallet.network()),
            amount: txout.value,
            change_index,
        });
    }

    let input_total = sum(inputs.iter().map(|(_, amount)| *amount), "the input total")?;
    let output_total = sum(outputs.iter().map(|o| o.amount), "the output total")?;
    let fee = input_total
        .checked_sub(output_total)
        .ok_or(SpendError::NegativeFee {
            input_total,
            output_total,
        })?;
    Ok(SpendDescription {
        inputs,
        outputs,
        input_total,
        fee,
    })
}

// ---- helpers ------------------------------------------------------------------------------

/// The wallet's script type if spends of it are built here (`wsh`, `sh`).
fn supported_script(wallet: &UtxoWallet) -> Result<MultisigScript, SpendError> {
    match wallet.script() {
        script @ (MultisigScript::Wsh | MultisigScript::Sh) => Ok(script),
        script => Err(SpendError::ScriptNotSupported { script }),
    }
}

fn check_payouts(payouts: &[Payout]) -> Result<(), SpendError> {
    if payouts.is_empty() {
        return Err(SpendError::NoPayouts);
    }
    let mut ids = BTreeSet::new();
    for payout in payouts {
        if !ids.insert(payout.request_id.as_str()) {
            return Err(SpendError::DuplicateRequest {
                request_id: payout.request_id.clone(),
            });
        }
        if payout.amount.to_sat() < DUST_LIMIT_SAT {
            return Err(SpendError::PayoutBelowDust {
                request_id: payout.request_id.clone(),
                amount: payout.amount,
            });
        }
    }
    Ok(())
}

fn sum(
    amounts: impl IntoIterator<Item = Amount>,
    what: &'static str,
) -> Result<Amount, SpendError> {
    amounts
        .into_iter()
        .try_fold(Amount::ZERO, |total, amount| total.checked_add(amount))
        .ok_or(SpendError::AmountOverflow { what })
}

/// Bytes of a fully signed input's witness (`wsh`: item count, empty item, two signatures,
/// witness script, each with its length byte) or scriptSig (`sh`: `OP_0`, two signature
/// pushes, `OP_PUSHDATA1 <105>` and the redeem script).
const fn satisfaction_bytes() -> u64 {
    // wsh: 1 (count) + 1 (empty) + 2 × (1 + 73) + (1 + 105) = 256
    // sh:  1 (OP_0) + 2 × (1 + 73) + (2 + 105) = 256
    2 * (1 + MAX_SIGNATURE_BYTES) + 1 + MULTISIG_SCRIPT_BYTES + 2
}

/// The weight a fully signed input adds to the same input with an empty scriptSig (and, for
/// `wsh`, no witness and no segwit marker): its witness (1 wu per byte), or its scriptSig and
/// the 2 extra bytes of the scriptSig's length (256 > 252 needs a 3-byte CompactSize), at
/// 4 wu per byte. Also `bdk_coin_select`'s satisfaction weight.
fn satisfaction_weight_wu(script: MultisigScript) -> u64 {
    match script {
        MultisigScript::Sh => (satisfaction_bytes() + 2) * 4,
        _ => satisfaction_bytes(),
    }
}

/// Estimated vsize (vbytes; bytes for `sh`) of the signed transaction with `input_count`
/// inputs of the wallet and `outputs`.
fn estimate_vsize(script: MultisigScript, input_count: usize, outputs: &[TxOut]) -> u64 {
    let unsigned = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn::default(); input_count],
        output: outputs.to_vec(),
    };
    let inputs = u64::try_from(input_count).expect("input count fits u64");
    let mut weight = unsigned.weight().to_wu() + inputs * satisfaction_weight_wu(script);
    if script.is_segwit() && input_count > 0 {
        // Segwit marker and flag.
        weight += 2;
    }
    weight.div_ceil(4)
}

/// `rate` × `vsize`, rounded up.
fn fee_for(rate: FeeRate, vsize: u64) -> Result<Amount, SpendError> {
    rate.fee_vb(vsize)
        .ok_or(SpendError::AmountOverflow { what: "the fee" })
}

/// BIP125: the larger of `rate` × `vsize` and `old_fee` + 1 sat/vB × `vsize` (rule 4).
fn replacement_fee(rate: FeeRate, old_fee: Amount, vsize: u64) -> Result<Amount, SpendError> {
    let by_rate = fee_for(rate, vsize)?;
    let rule_4 = old_fee
        .checked_add(fee_for(INCREMENTAL_RELAY_FEE_RATE, vsize)?)
        .ok_or(SpendError::AmountOverflow { what: "the fee" })?;
    Ok(by_rate.max(rule_4))
}

/// Fee, change and vsize of a spend of `inputs` paying `payouts`.
struct Settled {
    fee: Amount,
    change: Option<Amount>,
    vsize: u64,
}

/// The exact fee and change of spending `inputs` to `payouts` at `rate` (with BIP125's rule 4
/// over `replacing_fee` when given), or `None` if the inputs cannot pay.
fn settle(
    script: MultisigScript,
    inputs: &[WalletUtxo],
    payouts: &[TxOut],
    payout_total: Amount,
    change_script: &ScriptBuf,
    rate: FeeRate,
    replacing_fee: Option<Amount>,
) -> Result<Option<Settled>, SpendError> {
    let input_total = sum(inputs.iter().map(|u| u.amount), "the input total")?;
    let Some(available) = input_total.checked_sub(payout_total) else {
        return Ok(None);
    };
    let fee_at = |vsize| match replacing_fee {
        Some(old_fee) => replacement_fee(rate, old_fee, vsize),
        None => fee_for(rate, vsize),
    };
    let mut with_change = payouts.to_vec();
    with_change.push(TxOut {
        value: Amount::ZERO,
        script_pubkey: change_script.clone(),
    });
    let vsize = estimate_vsize(script, inputs.len(), &with_change);
    let fee = fee_at(vsize)?;
    if let Some(change) = available.checked_sub(fee)
        && change.to_sat() >= DUST_LIMIT_SAT
    {
        return Ok(Some(Settled {
            fee,
            change: Some(change),
            vsize,
        }));
    }
    let vsize = estimate_vsize(script, inputs.len(), payouts);
    let fee = fee_at(vsize)?;
    if available < fee {
        return Ok(None);
    }
    Ok(Some(Settled {
        fee: available,
        change: None,
        vsize,
    }))
}

/// A PSBT `bip32_derivation` map: public key → (master fingerprint, path).
type Bip32Derivation = BTreeMap<PublicKey, KeySource>;

/// The `bip32_derivation` entries of the three keys at `branch/index`, and the wallet's
/// sortedmulti script there.
fn wallet_derivation<C: Verification>(
    secp: &Secp256k1<C>,
    wallet: &UtxoWallet,
    branch: Branch,
    index: u32,
) -> Result<(Bip32Derivation, ScriptBuf), SpendError> {
    let script = wallet
        .definite_descriptor(branch, index)?
        .explicit_script()
        .map_err(|error| UtxoError::Descriptor(error.to_string()))?;
    let steps = [
        ChildNumber::from_normal_idx(branch.index())?,
        ChildNumber::from_normal_idx(index)?,
    ];
    let mut derivation = BTreeMap::new();
    for key in wallet.keys() {
        let child = key.xpub().derive_pub(secp, &steps)?;
        derivation.insert(
            child.public_key,
            (key.master_fingerprint(), key.path().extend(steps)),
        );
    }
    Ok((derivation, script))
}

/// The `(branch, index)` of every entry of `derivation` that names one of the wallet's keys
/// with a path under its BIP48 account.
fn wallet_paths(wallet: &UtxoWallet, derivation: &Bip32Derivation) -> Vec<(Branch, u32)> {
    derivation
        .values()
        .filter_map(|(fingerprint, path)| {
            wallet
                .keys()
                .iter()
                .filter(|key| key.master_fingerprint() == *fingerprint)
                .find_map(|key| split_account_path(path, key.path()))
        })
        .collect()
}

/// The address text of `script_pubkey` on `network`, if it has one.
fn address_of(script_pubkey: &ScriptBuf, network: UtxoNetwork) -> Option<String> {
    match network.bitcoin_network() {
        Some(network) => Address::from_script(script_pubkey, network)
            .ok()
            .map(|address| address.to_string()),
        None => dash_address(script_pubkey, network),
    }
}

/// Builds the PSBT and plan of a spend whose inputs, outputs and fee are decided.
fn build_plan(
    wallet: &UtxoWallet,
    inputs: Vec<WalletUtxo>,
    request_ids: Vec<String>,
    payout_outputs: Vec<TxOut>,
    change: Option<(u32, Amount)>,
    fee: Amount,
    vsize: u64,
) -> Result<SpendPlan, SpendError> {
    assert_eq!(request_ids.len(), payout_outputs.len());
    let script_type = supported_script(wallet)?;
    let secp = Secp256k1::verification_only();
    let sequence = if script_type == MultisigScript::Wsh {
        RBF_SEQUENCE
    } else {
        Sequence::MAX
    };

    let mut psbt_inputs = Vec::with_capacity(inputs.len());
    for utxo in &inputs {
        let (bip32_derivation, script) = wallet_derivation(&secp, wallet, utxo.branch, utxo.index)?;
        let mut input = Input {
            witness_utxo: Some(TxOut {
                value: utxo.amount,
                script_pubkey: wallet.script_pubkey(utxo.branch, utxo.index)?,
            }),
            bip32_derivation,
            ..Input::default()
        };
        if script_type == MultisigScript::Wsh {
            input.witness_script = Some(script);
        } else {
            input.redeem_script = Some(script);
        }
        psbt_inputs.push(input);
    }

    let mut outputs = payout_outputs;
    let mut psbt_outputs = vec![Output::default(); outputs.len()];
    let change = match change {
        Some((index, amount)) => {
            let (bip32_derivation, script) =
                wallet_derivation(&secp, wallet, Branch::Change, index)?;
            let mut output = Output {
                bip32_derivation,
                ..Output::default()
            };
            if script_type == MultisigScript::Wsh {
                output.witness_script = Some(script);
            } else {
                output.redeem_script = Some(script);
            }
            let vout = u32::try_from(outputs.len()).expect("fewer than 2^32 outputs");
            outputs.push(TxOut {
                value: amount,
                script_pubkey: wallet.script_pubkey(Branch::Change, index)?,
            });
            psbt_outputs.push(output);
            Some(ChangeOutput {
                vout,
                amount,
                index,
            })
        }
        None => None,
    };

    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|utxo| TxIn {
                previous_output: utxo.outpoint,
                script_sig: ScriptBuf::new(),
                sequence,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    let input_total = sum(inputs.iter().map(|u| u.amount), "the input total")?;
    let output_total = sum(tx.output.iter().map(|o| o.value), "the output total")?;
    assert_eq!(
        input_total.checked_sub(output_total),
        Some(fee),
        "the fee is inputs minus outputs"
    );
    let mut psbt = Psbt::from_unsigned_tx(tx)
        .expect("the unsigned transaction has empty scriptSigs and witnesses");
    psbt.inputs = psbt_inputs;
    psbt.outputs = psbt_outputs;
    let payout_vouts = request_ids
        .into_iter()
        .enumerate()
        .map(|(vout, id)| (id, u32::try_from(vout).expect("fewer than 2^32 outputs")))
        .collect();
    Ok(SpendPlan {
        psbt,
        inputs,
        payout_vouts,
        change,
        fee,
        vsize,
    })
}
