//! The cosigner's policy engine: decides whether key B may sign a proposed spend.
//!
//! Pure logic, no I/O (LDK's rule): the clock, the policy, the known unpaid withdrawal
//! requests and the history of approved payouts are all passed in by the caller, which also
//! persists the history and decodes the transaction. Chain-agnostic: a spend is described by
//! its asset, its outputs (destination text and amount), its fee and the request ids it claims
//! to pay.
//!
//! [`evaluate`] approves a [`ProposedSpend`] only when all of these hold (see
//! `../shared/DESIGN.md`, "Trust model", and issue 4 item 1):
//! - the asset has a configured [`AssetPolicy`];
//! - the fee is at most the asset's `fee_cap`;
//! - every request id the spend claims is listed once, is a known, not-yet-paid request of the
//!   same asset, and is paid by exactly one output;
//! - every output is either change to our own wallet (`is_change`, derived by the caller from
//!   the transaction bytes and our descriptor) or pays exactly one of the claimed requests —
//!   destination **and** amount equal, each request at most once;
//! - every payout is non-zero and at most the asset's `max_per_withdrawal`;
//! - no payout destination is on the deny list and, when an allow list is set, every payout
//!   destination is on it;
//! - the asset's payouts approved within the rolling 24 h window plus this spend's payouts are
//!   at most `max_24h`.
//!
//! Units and shapes:
//! - amounts and fees are integers in the asset's base units (satoshi, duff, wei, token base
//!   units) as [`Amount`] (`u128`); all sums use checked arithmetic and an overflow refuses;
//! - time is [`UnixSeconds`] (seconds since the Unix epoch, UTC);
//! - assets are codes (`"BTC"`, `"ETH"`, `"USDT"`), compared exactly;
//! - destinations are address text already normalized by the caller (one canonical spelling per
//!   address, e.g. lowercase hex for EVM, as validated by `coinhub_chains`), compared exactly.
//!
//! A refusal is a [`Refusal`] whose `Display` names the rule and the numbers, for the log and
//! the `withdrawal.*` event. The rules are checked in the order listed above and the first
//! failure is reported.

use std::collections::{BTreeMap, BTreeSet};

/// An amount or fee in an asset's base units (satoshi, duff, wei, token base units).
pub type Amount = u128;

/// A point in time: seconds since the Unix epoch (UTC).
pub type UnixSeconds = u64;

/// Length of the rolling velocity window: 24 h in seconds.
pub const WINDOW_SECS: u64 = 24 * 60 * 60;

/// A withdrawal request as the cosigner's own queue received it (`withdrawal.request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRequest {
    /// The exchange's request id (unique; a duplicate id is the same request).
    pub id: String,
    /// Asset code, e.g. `"BTC"`.
    pub asset: String,
    /// Normalized destination address text.
    pub destination: String,
    /// Amount to pay in base units.
    pub amount: Amount,
}

/// One output of a proposed transaction, as the caller decoded it from the transaction bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Normalized destination address text.
    pub destination: String,
    /// Amount in base units.
    pub amount: Amount,
    /// True when the caller derived `destination` from our own wallet descriptor (change).
    /// Change outputs are exempt from request matching, limits and address lists.
    pub is_change: bool,
}

/// A spend the hot signer (key A) asks the cosigner to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedSpend {
    /// Asset code of every output and of the fee.
    pub asset: String,
    /// Outputs in transaction order (indexes in refusals are 0-based positions here).
    pub outputs: Vec<Output>,
    /// Fee in base units (for UTXO chains: inputs − outputs; for EVM: the maximum gas cost).
    pub fee: Amount,
    /// Ids of the requests this spend pays.
    pub requests: Vec<String>,
}

/// Limits and address lists for one asset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssetPolicy {
    /// Largest single payout, base units (inclusive).
    pub max_per_withdrawal: Amount,
    /// Largest total of payouts within any rolling 24 h window, base units (inclusive).
    pub max_24h: Amount,
    /// Largest fee of one spend, base units (inclusive).
    pub fee_cap: Amount,
    /// Destinations never paid (normalized address text).
    pub deny: BTreeSet<String>,
    /// When set, the only destinations that may be paid (normalized address text).
    pub allow: Option<BTreeSet<String>>,
}

/// The cosigner's policy: one [`AssetPolicy`] per asset code. An asset without an entry is
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Per-asset policies, keyed by asset code.
    pub assets: BTreeMap<String, AssetPolicy>,
}

/// One payout the cosigner has already approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    /// Id of the request it pays.
    pub request_id: String,
    /// Asset code.
    pub asset: String,
    /// Normalized destination address text.
    pub destination: String,
    /// Amount in base units.
    pub amount: Amount,
    /// When the cosigner approved it.
    pub approved_at: UnixSeconds,
}

/// Payouts already approved, persisted by the caller (append [`Approval::payouts`] after
/// signing). Only the last 24 h are needed for the velocity limit; keeping older entries is
/// harmless and lets [`evaluate`] refuse a request id that was already paid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// Approved payouts, in any order.
    pub payouts: Vec<Payout>,
}

impl History {
    /// Sum of `asset`'s payouts approved within the 24 h window ending at `now`: approved at
    /// a time `t` with `now - 24 h < t`. Payouts dated after `now` (clock skew) also count,
    /// which can only make the limit stricter.
    ///
    /// # Errors
    /// [`Refusal::Overflow`] if the sum does not fit in an [`Amount`].
    pub fn total_within_24h(&self, asset: &str, now: UnixSeconds) -> Result<Amount, Refusal> {
        self.payouts
            .iter()
            .filter(|p| p.asset == asset && p.approved_at.saturating_add(WINDOW_SECS) > now)
            .try_fold(0, |sum: Amount, p| {
                sum.checked_add(p.amount).ok_or(Refusal::Overflow {
                    what: "the 24 h history total",
                })
            })
    }
}

/// The cosigner's approval of a spend: what it pays, for the caller to record in [`History`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Asset code.
    pub asset: String,
    /// One payout per request paid, in output order, dated `now`.
    pub payouts: Vec<Payout>,
    /// Sum of the payouts, base units.
    pub total_paid: Amount,
    /// Sum of the change outputs, base units.
    pub change: Amount,
    /// The fee, base units.
    pub fee: Amount,
    /// The asset's 24 h total including this spend, base units.
    pub total_24h: Amount,
}

/// Why the cosigner refuses to sign. `Display` names the rule and the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The spend's asset has no policy.
    #[error("asset {asset} has no policy")]
    UnknownAsset {
        /// The asset code.
        asset: String,
    },
    /// The fee exceeds the asset's cap.
    #[error("fee {fee} exceeds the cap {cap} for {asset}")]
    FeeOverCap {
        /// The asset code.
        asset: String,
        /// The proposed fee, base units.
        fee: Amount,
        /// The configured cap, base units.
        cap: Amount,
    },
    /// The spend has no outputs.
    #[error("the spend has no outputs")]
    NoOutputs,
    /// The spend lists the same request id more than once.
    #[error("request {id} is listed twice in the spend")]
    RequestListedTwice {
        /// The request id.
        id: String,
    },
    /// A claimed request is not among the known, not-yet-paid requests.
    #[error("request {id} is not a known unpaid request")]
    UnknownRequest {
        /// The request id.
        id: String,
    },
    /// A claimed request was already paid (it is in the history).
    #[error("request {id} was already paid at {approved_at}")]
    AlreadyPaid {
        /// The request id.
        id: String,
        /// When the earlier payout was approved (Unix seconds).
        approved_at: UnixSeconds,
    },
    /// A claimed request is for another asset than the spend.
    #[error("request {id} is for {request_asset}, the spend pays {spend_asset}")]
    WrongAsset {
        /// The request id.
        id: String,
        /// The request's asset code.
        request_asset: String,
        /// The spend's asset code.
        spend_asset: String,
    },
    /// A non-change output pays a destination no claimed request pays.
    #[error("output {index} pays {destination} {amount} which matches no unpaid request")]
    UnknownOutput {
        /// 0-based output index.
        index: usize,
        /// The output's destination.
        destination: String,
        /// The output's amount, base units.
        amount: Amount,
    },
    /// A non-change output pays a requested destination, but not the requested amount.
    #[error("output {index} pays {destination} {amount} but request {id} asks for {requested}")]
    AmountChanged {
        /// 0-based output index.
        index: usize,
        /// The output's destination.
        destination: String,
        /// The output's amount, base units.
        amount: Amount,
        /// The request whose destination it matches.
        id: String,
        /// The request's amount, base units.
        requested: Amount,
    },
    /// A non-change output pays a request an earlier output of the spend already pays.
    #[error("output {index} pays request {id} ({destination} {amount}) a second time")]
    PaidTwice {
        /// 0-based output index.
        index: usize,
        /// The request id.
        id: String,
        /// The destination.
        destination: String,
        /// The amount, base units.
        amount: Amount,
    },
    /// A claimed request has no output paying it.
    #[error("request {id} ({destination} {amount}) is claimed but no output pays it")]
    RequestNotPaid {
        /// The request id.
        id: String,
        /// The request's destination.
        destination: String,
        /// The request's amount, base units.
        amount: Amount,
    },
    /// A payout of zero.
    #[error("output {index} pays {destination} 0")]
    ZeroAmount {
        /// 0-based output index.
        index: usize,
        /// The destination.
        destination: String,
    },
    /// A payout above the asset's per-withdrawal maximum.
    #[error(
        "request {id} pays {amount} which exceeds the per-withdrawal maximum {max} for {asset}"
    )]
    OverPerWithdrawal {
        /// The request id.
        id: String,
        /// The asset code.
        asset: String,
        /// The amount, base units.
        amount: Amount,
        /// The configured maximum, base units.
        max: Amount,
    },
    /// A payout to a denied destination.
    #[error("output {index} pays {destination} which is on the deny list for {asset}")]
    Denied {
        /// 0-based output index.
        index: usize,
        /// The destination.
        destination: String,
        /// The asset code.
        asset: String,
    },
    /// A payout to a destination missing from the allow list.
    #[error("output {index} pays {destination} which is not on the allow list for {asset}")]
    NotAllowed {
        /// 0-based output index.
        index: usize,
        /// The destination.
        destination: String,
        /// The asset code.
        asset: String,
    },
    /// The rolling 24 h total would exceed the asset's limit.
    #[error("24 h total would be {previous} + {this_spend} > {max} for {asset}")]
    Over24h {
        /// The asset code.
        asset: String,
        /// Payouts approved within the window before this spend, base units.
        previous: Amount,
        /// This spend's payouts, base units.
        this_spend: Amount,
        /// The configured limit, base units.
        max: Amount,
    },
    /// A sum overflowed `u128` (no legitimate spend does this).
    #[error("{what} overflows")]
    Overflow {
        /// Which sum.
        what: &'static str,
    },
}

/// Decides whether the cosigner may sign `spend` at `now`.
///
/// `known_unpaid` is the cosigner's own queue of withdrawal requests not yet paid (any asset,
/// any order; a duplicate id counts once, first wins). `history` holds the payouts approved
/// so far. On approval, the caller records [`Approval::payouts`] in its history before (or
/// atomically with) releasing the signature.
///
/// # Errors
/// The first [`Refusal`] in the rule order given in the module documentation.
pub fn evaluate(
    policy: &Policy,
    spend: &ProposedSpend,
    known_unpaid: &[WithdrawalRequest],
    history: &History,
    now: UnixSeconds,
) -> Result<Approval, Refusal> {
    let asset = spend.asset.as_str();
    let rules = policy
        .assets
        .get(asset)
        .ok_or_else(|| Refusal::UnknownAsset {
            asset: asset.to_owned(),
        })?;

    if spend.fee > rules.fee_cap {
        return Err(Refusal::FeeOverCap {
            asset: asset.to_owned(),
            fee: spend.fee,
            cap: rules.fee_cap,
        });
    }
    if spend.outputs.is_empty() {
        return Err(Refusal::NoOutputs);
    }

    // Resolve the claimed request ids.
    let mut known: BTreeMap<&str, &WithdrawalRequest> = BTreeMap::new();
    for request in known_unpaid {
        known.entry(request.id.as_str()).or_insert(request);
    }
    let mut claimed: Vec<&WithdrawalRequest> = Vec::with_capacity(spend.requests.len());
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for id in &spend.requests {
        if !seen.insert(id.as_str()) {
            return Err(Refusal::RequestListedTwice { id: id.clone() });
        }
        let request = known
            .get(id.as_str())
            .ok_or_else(|| Refusal::UnknownRequest { id: id.clone() })?;
        if let Some(paid) = history.payouts.iter().find(|p| p.request_id == *id) {
            return Err(Refusal::AlreadyPaid {
                id: id.clone(),
                approved_at: paid.approved_at,
            });
        }
        if request.asset != spend.asset {
            return Err(Refusal::WrongAsset {
                id: id.clone(),
                request_asset: request.asset.clone(),
                spend_asset: spend.asset.clone(),
            });
        }
        claimed.push(request);
    }

    // Match every non-change output to exactly one claimed request.
    let mut used = vec![false; claimed.len()];
    let mut payouts: Vec<(usize, &WithdrawalRequest)> = Vec::with_capacity(claimed.len());
    let mut change: Amount = 0;
    for (index, output) in spend.outputs.iter().enumerate() {
        if output.is_change {
            change = change.checked_add(output.amount).ok_or(Refusal::Overflow {
                what: "the change total",
            })?;
            continue;
        }
        let exact = |r: &WithdrawalRequest| {
            r.destination == output.destination && r.amount == output.amount
        };
        if let Some(slot) = (0..claimed.len()).find(|&i| !used[i] && exact(claimed[i])) {
            used[slot] = true;
            payouts.push((index, claimed[slot]));
            continue;
        }
        if let Some(request) = claimed.iter().find(|r| exact(r)) {
            return Err(Refusal::PaidTwice {
                index,
                id: request.id.clone(),
                destination: output.destination.clone(),
                amount: output.amount,
            });
        }
        if let Some(request) = claimed.iter().find(|r| r.destination == output.destination) {
            return Err(Refusal::AmountChanged {
                index,
                destination: output.destination.clone(),
                amount: output.amount,
                id: request.id.clone(),
                requested: request.amount,
            });
        }
        return Err(Refusal::UnknownOutput {
            index,
            destination: output.destination.clone(),
            amount: output.amount,
        });
    }
    if let Some(slot) = used.iter().position(|u| !u) {
        let request = claimed[slot];
        return Err(Refusal::RequestNotPaid {
            id: request.id.clone(),
            destination: request.destination.clone(),
            amount: request.amount,
        });
    }

    // Per-payout limits and address lists.
    let mut total_paid: Amount = 0;
    for &(index, request) in &payouts {
        if request.amount == 0 {
            return Err(Refusal::ZeroAmount {
                index,
                destination: request.destination.clone(),
            });
        }
        if request.amount > rules.max_per_withdrawal {
            return Err(Refusal::OverPerWithdrawal {
                id: request.id.clone(),
                asset: asset.to_owned(),
                amount: request.amount,
                max: rules.max_per_withdrawal,
            });
        }
        if rules.deny.contains(&request.destination) {
            return Err(Refusal::Denied {
                index,
                destination: request.destination.clone(),
                asset: asset.to_owned(),
            });
        }
        if let Some(allow) = &rules.allow
            && !allow.contains(&request.destination)
        {
            return Err(Refusal::NotAllowed {
                index,
                destination: request.destination.clone(),
                asset: asset.to_owned(),
            });
        }
        total_paid = total_paid
            .checked_add(request.amount)
            .ok_or(Refusal::Overflow {
                what: "the spend's payout total",
            })?;
    }

    // Rolling 24 h velocity.
    let previous = history.total_within_24h(asset, now)?;
    let total_24h = match previous.checked_add(total_paid) {
        Some(total) if total <= rules.max_24h => total,
        _ => {
            return Err(Refusal::Over24h {
                asset: asset.to_owned(),
                previous,
                this_spend: total_paid,
                max: rules.max_24h,
            });
        }
    };

    Ok(Approval {
        asset: asset.to_owned(),
        payouts: payouts
            .iter()
            .map(|&(_, r)| Payout {
                request_id: r.id.clone(),
                asset: r.asset.clone(),
                destination: r.destination.clone(),
                amount: r.amount,
                approved_at: now,
            })
            .collect(),
        total_paid,
        change,
        fee: spend.fee,
        total_24h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window is half-open at its old end: exactly 24 h old no longer counts, 1 s younger
    /// does; a future-dated payout counts.
    #[test]
    fn policy_window_edges() {
        let payout = |t| Payout {
            request_id: "r".into(),
            asset: "BTC".into(),
            destination: "d".into(),
            amount: 5,
            approved_at: t,
        };
        let now = 1_000_000;
        let history = History {
            payouts: vec![
                payout(now - WINDOW_SECS),
                payout(now - WINDOW_SECS + 1),
                payout(now + 10),
            ],
        };
        assert_eq!(history.total_within_24h("BTC", now), Ok(10));
        assert_eq!(history.total_within_24h("ETH", now), Ok(0));
    }
}
