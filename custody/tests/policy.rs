//! The cosigner's policy engine (`coinhub_custody::policy`): every refusal of issue 4 item 1
//! with the rule and numbers in its message, an approval of a valid batch with change, and a
//! property test that valid batches are approved and any ±1 change to a payout is refused.

use std::collections::{BTreeMap, BTreeSet};

use coinhub_custody::policy::{
    Amount, AssetPolicy, History, Output, Payout, Policy, ProposedSpend, Refusal, UnixSeconds,
    WINDOW_SECS, WithdrawalRequest, evaluate,
};
use proptest::prelude::*;

/// A fixed "now" (2025-01-01T00:00:00Z).
const NOW: UnixSeconds = 1_735_689_600;

const ALICE: &str = "bcrt1qalice";
const BOB: &str = "bcrt1qbob";
const CAROL: &str = "bcrt1qcarol";
const MALLORY: &str = "bcrt1qmallory";
const CHANGE: &str = "bcrt1qourchange";

/// BTC: 1 BTC per withdrawal, 5 BTC per 24 h, fee cap 10 000 sat, MALLORY denied.
fn policy() -> Policy {
    let btc = AssetPolicy {
        max_per_withdrawal: 100_000_000,
        max_24h: 500_000_000,
        fee_cap: 10_000,
        deny: BTreeSet::from([MALLORY.to_owned()]),
        allow: None,
    };
    Policy {
        assets: BTreeMap::from([("BTC".to_owned(), btc)]),
    }
}

fn request(id: &str, destination: &str, amount: Amount) -> WithdrawalRequest {
    WithdrawalRequest {
        id: id.to_owned(),
        asset: "BTC".to_owned(),
        destination: destination.to_owned(),
        amount,
    }
}

fn pay(destination: &str, amount: Amount) -> Output {
    Output {
        destination: destination.to_owned(),
        amount,
        is_change: false,
    }
}

fn change(amount: Amount) -> Output {
    Output {
        destination: CHANGE.to_owned(),
        amount,
        is_change: true,
    }
}

/// Unpaid requests: r1 ALICE 0.3 BTC, r2 BOB 0.2 BTC, r3 CAROL 0.1 BTC.
fn unpaid() -> Vec<WithdrawalRequest> {
    vec![
        request("r1", ALICE, 30_000_000),
        request("r2", BOB, 20_000_000),
        request("r3", CAROL, 10_000_000),
    ]
}

/// A valid spend of r1 and r2 with change and a 5 000 sat fee.
fn batch() -> ProposedSpend {
    ProposedSpend {
        asset: "BTC".to_owned(),
        outputs: vec![
            pay(ALICE, 30_000_000),
            change(12_345_678),
            pay(BOB, 20_000_000),
        ],
        fee: 5_000,
        requests: vec!["r1".to_owned(), "r2".to_owned()],
    }
}

fn paid_at(id: &str, amount: Amount, approved_at: UnixSeconds) -> Payout {
    Payout {
        request_id: id.to_owned(),
        asset: "BTC".to_owned(),
        destination: CAROL.to_owned(),
        amount,
        approved_at,
    }
}

/// Evaluates and returns the refusal with its message; panics on approval.
fn refuse(
    spend: &ProposedSpend,
    unpaid: &[WithdrawalRequest],
    history: &History,
) -> (Refusal, String) {
    match evaluate(&policy(), spend, unpaid, history, NOW) {
        Ok(approval) => panic!("expected a refusal, got {approval:?}"),
        Err(refusal) => {
            let message = refusal.to_string();
            (refusal, message)
        }
    }
}

/// A batch paying two requests exactly, plus change to our wallet, is approved; the approval
/// lists the payouts dated `now`, the totals, and the 24 h total including older payouts.
#[test]
fn approves_valid_batch_with_change() {
    let history = History {
        payouts: vec![paid_at("old", 7, NOW - 60)],
    };
    let approval = evaluate(&policy(), &batch(), &unpaid(), &history, NOW).expect("approved");
    assert_eq!(approval.total_paid, 50_000_000);
    assert_eq!(approval.change, 12_345_678);
    assert_eq!(approval.fee, 5_000);
    assert_eq!(approval.total_24h, 50_000_007);
    let ids: Vec<_> = approval
        .payouts
        .iter()
        .map(|p| p.request_id.as_str())
        .collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert!(
        approval
            .payouts
            .iter()
            .all(|p| p.approved_at == NOW && p.asset == "BTC")
    );
}

/// A request above the per-withdrawal maximum is refused, naming the amount and the maximum.
#[test]
fn refuses_amount_over_per_withdrawal_limit() {
    let unpaid = vec![request("big", ALICE, 100_000_001)];
    let spend = ProposedSpend {
        asset: "BTC".to_owned(),
        outputs: vec![pay(ALICE, 100_000_001), change(1_000)],
        fee: 1_000,
        requests: vec!["big".to_owned()],
    };
    let (refusal, message) = refuse(&spend, &unpaid, &History::default());
    assert!(
        matches!(refusal, Refusal::OverPerWithdrawal { .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "request big pays 100000001 which exceeds the per-withdrawal maximum 100000000 for BTC"
    );
}

/// The rolling 24 h limit counts payouts approved less than 24 h ago plus this spend; a payout
/// exactly 24 h old no longer counts, so the same spend is then approved.
#[test]
fn refuses_24h_limit_exceeded_and_forgets_old_payouts() {
    // 4.6 BTC paid 1 s short of 24 h ago + 0.5 BTC now > 5 BTC.
    let recent = History {
        payouts: vec![paid_at("old", 460_000_000, NOW - WINDOW_SECS + 1)],
    };
    let (refusal, message) = refuse(&batch(), &unpaid(), &recent);
    assert!(matches!(refusal, Refusal::Over24h { .. }), "{refusal:?}");
    assert_eq!(
        message,
        "24 h total would be 460000000 + 50000000 > 500000000 for BTC"
    );

    // The same payout 24 h old (and older) is outside the window.
    for age in [WINDOW_SECS, WINDOW_SECS + 1] {
        let old = History {
            payouts: vec![paid_at("old", 460_000_000, NOW - age)],
        };
        let approval = evaluate(&policy(), &batch(), &unpaid(), &old, NOW).expect("approved");
        assert_eq!(approval.total_24h, 50_000_000);
    }

    // Payouts of other assets do not count.
    let mut other = paid_at("eth", 460_000_000, NOW - 1);
    other.asset = "ETH".to_owned();
    let other = History {
        payouts: vec![other],
    };
    assert!(evaluate(&policy(), &batch(), &unpaid(), &other, NOW).is_ok());
}

/// A request to a denied address is refused even though it is a known unpaid request.
#[test]
fn refuses_denied_address() {
    let unpaid = vec![request("m", MALLORY, 1_000)];
    let spend = ProposedSpend {
        asset: "BTC".to_owned(),
        outputs: vec![pay(MALLORY, 1_000), change(5_000)],
        fee: 500,
        requests: vec!["m".to_owned()],
    };
    let (refusal, message) = refuse(&spend, &unpaid, &History::default());
    assert!(
        matches!(refusal, Refusal::Denied { index: 0, .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "output 0 pays bcrt1qmallory which is on the deny list for BTC"
    );
}

/// With an allow list set, a request to an address not on it is refused; on it, approved.
#[test]
fn refuses_address_not_on_allow_list() {
    let mut policy = policy();
    let btc = policy.assets.get_mut("BTC").expect("BTC policy");
    btc.allow = Some(BTreeSet::from([ALICE.to_owned()]));
    let (refusal, message) = match evaluate(&policy, &batch(), &unpaid(), &History::default(), NOW)
    {
        Ok(approval) => panic!("expected a refusal, got {approval:?}"),
        Err(refusal) => (refusal.clone(), refusal.to_string()),
    };
    assert!(
        matches!(refusal, Refusal::NotAllowed { index: 2, .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "output 2 pays bcrt1qbob which is not on the allow list for BTC"
    );

    let btc = policy.assets.get_mut("BTC").expect("BTC policy");
    btc.allow = Some(BTreeSet::from([ALICE.to_owned(), BOB.to_owned()]));
    assert!(evaluate(&policy, &batch(), &unpaid(), &History::default(), NOW).is_ok());
}

/// An extra output to an address no request pays is refused with its index, address, amount.
#[test]
fn refuses_extra_output_to_unknown_address() {
    let mut spend = batch();
    spend.outputs.push(pay("bcrt1qthief", 1_500));
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::UnknownOutput { index: 3, .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "output 3 pays bcrt1qthief 1500 which matches no unpaid request"
    );

    // An output to a known unpaid request the spend does not claim is just as unknown.
    let mut spend = batch();
    spend.outputs.push(pay(CAROL, 10_000_000));
    let (refusal, _) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::UnknownOutput { index: 3, .. }),
        "{refusal:?}"
    );
}

/// An output to a requested address with a different amount is refused, naming both amounts.
#[test]
fn refuses_changed_amount() {
    let mut spend = batch();
    spend.outputs[2].amount = 20_000_001;
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::AmountChanged { index: 2, .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "output 2 pays bcrt1qbob 20000001 but request r2 asks for 20000000"
    );
}

/// A request paid by two outputs, or listed twice, in one spend is refused; so is a request
/// the history shows as already paid, and a claimed request no output pays.
#[test]
fn refuses_request_paid_twice_in_one_spend() {
    let mut spend = batch();
    spend.outputs.push(pay(ALICE, 30_000_000));
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::PaidTwice { index: 3, .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "output 3 pays request r1 (bcrt1qalice 30000000) a second time"
    );

    let mut spend = batch();
    spend.requests.push("r1".to_owned());
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::RequestListedTwice { .. }),
        "{refusal:?}"
    );
    assert_eq!(message, "request r1 is listed twice in the spend");

    let history = History {
        payouts: vec![paid_at("r2", 20_000_000, NOW - 3 * WINDOW_SECS)],
    };
    let (refusal, message) = refuse(&batch(), &unpaid(), &history);
    assert!(
        matches!(refusal, Refusal::AlreadyPaid { .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        format!("request r2 was already paid at {}", NOW - 3 * WINDOW_SECS)
    );

    let mut spend = batch();
    spend.outputs.remove(2);
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::RequestNotPaid { .. }),
        "{refusal:?}"
    );
    assert_eq!(
        message,
        "request r2 (bcrt1qbob 20000000) is claimed but no output pays it"
    );

    let mut spend = batch();
    spend.requests.push("nope".to_owned());
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::UnknownRequest { .. }),
        "{refusal:?}"
    );
    assert_eq!(message, "request nope is not a known unpaid request");
}

/// A fee above the asset's cap is refused; a fee equal to the cap is approved.
#[test]
fn refuses_fee_over_cap() {
    let mut spend = batch();
    spend.fee = 12_000;
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(matches!(refusal, Refusal::FeeOverCap { .. }), "{refusal:?}");
    assert_eq!(message, "fee 12000 exceeds the cap 10000 for BTC");

    spend.fee = 10_000;
    assert!(evaluate(&policy(), &spend, &unpaid(), &History::default(), NOW).is_ok());
}

/// A spend of an asset without a policy is refused; so is a request of another asset.
#[test]
fn refuses_unknown_asset() {
    let mut spend = batch();
    spend.asset = "DOGE".to_owned();
    let (refusal, message) = refuse(&spend, &unpaid(), &History::default());
    assert!(
        matches!(refusal, Refusal::UnknownAsset { .. }),
        "{refusal:?}"
    );
    assert_eq!(message, "asset DOGE has no policy");

    let mut unpaid = unpaid();
    unpaid[0].asset = "DASH".to_owned();
    let (refusal, message) = refuse(&batch(), &unpaid, &History::default());
    assert!(matches!(refusal, Refusal::WrongAsset { .. }), "{refusal:?}");
    assert_eq!(message, "request r1 is for DASH, the spend pays BTC");
}

/// A valid random batch: requests (destinations from a small pool, so addresses repeat),
/// outputs in a shuffled order with change outputs interleaved, a fee within the cap.
fn valid_batch() -> impl Strategy<Value = (Vec<WithdrawalRequest>, ProposedSpend)> {
    let requests = prop::collection::vec((0..6usize, 1..=100_000_000u128), 1..8);
    let changes = prop::collection::vec(0..=1_000_000_000u128, 0..3);
    (requests, changes, 0..=10_000u128, any::<u64>()).prop_map(|(reqs, changes, fee, seed)| {
        let unpaid: Vec<WithdrawalRequest> = reqs
            .iter()
            .enumerate()
            .map(|(i, &(dest, amount))| {
                request(&format!("q{i}"), &format!("bcrt1qdest{dest}"), amount)
            })
            .collect();
        let mut outputs: Vec<Output> = unpaid
            .iter()
            .map(|r| pay(&r.destination, r.amount))
            .collect();
        outputs.extend(changes.into_iter().map(change));
        // Deterministic shuffle from the seed (Fisher–Yates with an LCG).
        let mut state = seed;
        for i in (1..outputs.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap_or(0);
            outputs.swap(i, j);
        }
        let spend = ProposedSpend {
            asset: "BTC".to_owned(),
            outputs,
            fee,
            requests: unpaid.iter().map(|r| r.id.clone()).collect(),
        };
        (unpaid, spend)
    })
}

proptest! {
    /// For random valid batches the engine approves, and adding or subtracting 1 to any one
    /// payout output's amount makes it refuse. (Change amounts are not request-bound: the
    /// caller's fee = inputs − outputs covers them, and the fee cap is tested above.)
    #[test]
    fn valid_batches_approve_and_any_payout_off_by_one_refuses(
        (unpaid, spend) in valid_batch(),
        pick in any::<prop::sample::Index>(),
        plus in any::<bool>(),
    ) {
        // 7 payouts of at most 1 BTC fit in a 10 BTC window.
        let mut policy = policy();
        if let Some(btc) = policy.assets.get_mut("BTC") {
            btc.max_24h = 1_000_000_000;
        }
        let history = History::default();
        let approval = evaluate(&policy, &spend, &unpaid, &history, NOW);
        prop_assert!(approval.is_ok(), "{:?}", approval);

        let payout_indexes: Vec<usize> =
            spend.outputs.iter().enumerate().filter(|(_, o)| !o.is_change).map(|(i, _)| i).collect();
        let index = payout_indexes[pick.index(payout_indexes.len())];
        let mut mutated = spend.clone();
        let amount = mutated.outputs[index].amount;
        mutated.outputs[index].amount = if plus { amount + 1 } else { amount - 1 };
        let refused = evaluate(&policy, &mutated, &unpaid, &history, NOW);
        prop_assert!(refused.is_err(), "mutated output {} still approved: {:?}", index, refused);
    }
}
