//! Withdrawal spends of the 2-of-3 wallets, end to end without a node: plan a spend from UTXOs
//! of fake previous transactions that pay the wallet, sign it with keys A and B, finalize it,
//! and run every input's script through libbitcoinconsensus (Bitcoin Core's interpreter) with
//! the spent output's script and amount. For a Bitcoin regtest `wsh` wallet and a Dash regtest
//! `sh` wallet; plus fee bumps (BIP125), the cosigner's description, and the error cases.

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, FeeRate, OutPoint, PubkeyHash, ScriptBuf, ScriptHash, Sequence, Transaction, TxIn,
    TxOut, WPubkeyHash, Witness,
};
use coinhub_custody::derivation::MasterKey;
use coinhub_custody::mnemonic::{Mnemonic, Seed};
use coinhub_custody::psbt::{PsbtError, combine_psbt, finalize_psbt, sign_psbt};
use coinhub_custody::spend::{
    DUST_LIMIT_SAT, Payout, SpendError, SpendPlan, WalletUtxo, bump_fee, describe_spend, plan_spend,
};
use coinhub_custody::utxo::{Branch, MultisigScript, UtxoNetwork, UtxoWallet};
use proptest::prelude::*;

const MNEMONIC_A: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const MNEMONIC_B: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";
const MNEMONIC_C: &str =
    "letter advice cage absurd amount doctor acoustic avoid letter advice cage above";

const CHANGE_INDEX: u32 = 3;

fn seed(words: &str) -> Seed {
    Mnemonic::parse(words).expect("mnemonic").to_seed()
}

fn wallet(network: UtxoNetwork, script: MultisigScript) -> UtxoWallet {
    let keys = [MNEMONIC_A, MNEMONIC_B, MNEMONIC_C].map(|words| {
        MasterKey::from_seed(&seed(words))
            .expect("master")
            .bip48_account_xpub(network, script.bip48_script_type())
            .expect("account")
    });
    UtxoWallet::new(network, script, keys).expect("wallet")
}

fn bitcoin_wallet() -> UtxoWallet {
    wallet(UtxoNetwork::BitcoinRegtest, MultisigScript::Wsh)
}

fn dash_wallet() -> UtxoWallet {
    wallet(UtxoNetwork::DashRegtest, MultisigScript::Sh)
}

/// A fake funding transaction (its input spends a made-up outpoint) whose outputs pay the
/// wallet's receive addresses `0..amounts.len()`, and the UTXOs it creates.
fn fund(wallet: &UtxoWallet, amounts_sat: &[u64], salt: u8) -> (Transaction, Vec<WalletUtxo>) {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: bitcoin::Txid::from_byte_array([salt; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: amounts_sat
            .iter()
            .enumerate()
            .map(|(index, amount)| TxOut {
                value: Amount::from_sat(*amount),
                script_pubkey: wallet
                    .script_pubkey(Branch::Receive, index as u32)
                    .expect("script"),
            })
            .collect(),
    };
    let txid = tx.compute_txid();
    let utxos = amounts_sat
        .iter()
        .enumerate()
        .map(|(index, amount)| WalletUtxo {
            outpoint: OutPoint {
                txid,
                vout: index as u32,
            },
            amount: Amount::from_sat(*amount),
            branch: Branch::Receive,
            index: index as u32,
        })
        .collect();
    (tx, utxos)
}

/// Three payouts to outside scripts (P2WPKH, P2PKH, P2SH on Bitcoin; P2PKH, P2SH on Dash).
fn payouts(wallet: &UtxoWallet) -> Vec<Payout> {
    let first = if wallet.network().is_dash() {
        ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array([0x11; 20]))
    } else {
        ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([0x11; 20]))
    };
    vec![
        Payout {
            request_id: "req-1".into(),
            script_pubkey: first,
            amount: Amount::from_sat(1_500_000),
        },
        Payout {
            request_id: "req-2".into(),
            script_pubkey: ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array([0x22; 20])),
            amount: Amount::from_sat(2_250_000),
        },
        Payout {
            request_id: "req-3".into(),
            script_pubkey: ScriptBuf::new_p2sh(&ScriptHash::from_byte_array([0x33; 20])),
            amount: Amount::from_sat(700_000),
        },
    ]
}

fn rate(sat_per_vb: u32) -> FeeRate {
    FeeRate::from_sat_per_vb_u32(sat_per_vb)
}

/// Signs `psbt` with A and with B separately, combines, finalizes and extracts.
fn sign_a_b_and_finalize(psbt: &Psbt, wallet: &UtxoWallet) -> Transaction {
    let mut signed_a = psbt.clone();
    let report = sign_psbt(&mut signed_a, &seed(MNEMONIC_A), wallet).expect("sign A");
    assert_eq!(report.signed.len(), psbt.inputs.len());
    let mut signed_b = psbt.clone();
    sign_psbt(&mut signed_b, &seed(MNEMONIC_B), wallet).expect("sign B");
    combine_psbt(&mut signed_a, signed_b).expect("combine");
    finalize_psbt(&mut signed_a).expect("finalize")
}

/// The spent output of every input of `tx`, looked up in `funding`.
fn spent_outputs(tx: &Transaction, funding: &[&Transaction]) -> Vec<TxOut> {
    tx.input
        .iter()
        .map(|txin| {
            let previous = funding
                .iter()
                .find(|prev| prev.compute_txid() == txin.previous_output.txid)
                .expect("input spends a funding transaction");
            previous.output[txin.previous_output.vout as usize].clone()
        })
        .collect()
}

/// Runs every input of `tx` through libbitcoinconsensus with the flags of its chain; the
/// index and error of the first input that fails.
fn verify_scripts(
    tx: &Transaction,
    spent: &[TxOut],
    dash: bool,
) -> Result<(), (usize, bitcoinconsensus::Error)> {
    let raw = bitcoin::consensus::serialize(tx);
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|output| bitcoinconsensus::Utxo {
            script_pubkey: output.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: output.script_pubkey.len() as u32,
            value: output.value.to_sat() as i64,
        })
        .collect();
    let flags = if dash {
        bitcoinconsensus::VERIFY_P2SH
            | bitcoinconsensus::VERIFY_DERSIG
            | bitcoinconsensus::VERIFY_NULLDUMMY
            | bitcoinconsensus::VERIFY_CHECKLOCKTIMEVERIFY
            | bitcoinconsensus::VERIFY_CHECKSEQUENCEVERIFY
    } else {
        bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT
    };
    for (index, output) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            output.script_pubkey.as_bytes(),
            output.value.to_sat(),
            &raw,
            if dash { None } else { Some(utxos.as_slice()) },
            index,
            flags,
        )
        .map_err(|error| (index, error))?;
    }
    Ok(())
}

/// Checks a plan's outputs, fee and vsize against its payouts, signs, finalizes and verifies
/// it; returns the signed transaction.
fn check_signed_plan(
    wallet: &UtxoWallet,
    plan: &SpendPlan,
    payouts: &[Payout],
    fee_rate: FeeRate,
    funding: &[&Transaction],
) -> Transaction {
    let dash = wallet.network().is_dash();
    let tx = &plan.psbt.unsigned_tx;
    // Payouts: same order, exact amounts and scripts.
    assert_eq!(plan.payout_vouts.len(), payouts.len());
    for ((id, vout), payout) in plan.payout_vouts.iter().zip(payouts) {
        assert_eq!(id, &payout.request_id);
        let output = &tx.output[*vout as usize];
        assert_eq!(output.value, payout.amount, "{id}");
        assert_eq!(output.script_pubkey, payout.script_pubkey, "{id}");
    }
    // Inputs: in PSBT order, sequence per chain.
    assert_eq!(plan.inputs.len(), tx.input.len());
    for (txin, utxo) in tx.input.iter().zip(&plan.inputs) {
        assert_eq!(txin.previous_output, utxo.outpoint);
        let expected = if dash { 0xffff_ffff } else { 0xffff_fffd };
        assert_eq!(txin.sequence.to_consensus_u32(), expected);
    }
    // Fee = inputs − outputs.
    let input_total: Amount = plan.inputs.iter().map(|u| u.amount).sum();
    let output_total: Amount = tx.output.iter().map(|o| o.value).sum();
    assert_eq!(input_total - output_total, plan.fee);

    let signed = sign_a_b_and_finalize(&plan.psbt, wallet);
    let real_vsize = signed.vsize() as u64;
    assert!(
        real_vsize <= plan.vsize,
        "estimate {} must bound the real vsize {real_vsize}",
        plan.vsize
    );
    // Low-R signatures are at most 71 bytes, the estimate assumes 73: per input about
    // 1 vbyte for wsh (4 witness bytes), 6 bytes for sh (4 bytes of signatures, and a
    // scriptSig under 253 bytes has a 1-byte length instead of 3).
    let slack = if dash { 6 } else { 1 } * plan.inputs.len() as u64 + 1;
    assert!(
        plan.vsize - real_vsize <= slack,
        "{} vs {real_vsize}",
        plan.vsize
    );
    assert!(plan.fee >= fee_rate.fee_vb(real_vsize).expect("fee"));
    if dash {
        assert!(signed.input.iter().all(|txin| txin.witness.is_empty()));
    } else {
        assert!(signed.input.iter().all(|txin| txin.script_sig.is_empty()));
    }
    let spent = spent_outputs(&signed, funding);
    for (output, utxo) in spent.iter().zip(&plan.inputs) {
        assert_eq!(output.value, utxo.amount);
    }
    if let Err((index, error)) = verify_scripts(&signed, &spent, dash) {
        panic!("input {index} fails script verification: {error:?}");
    }
    // The check is real: the same signatures over a changed payout fail.
    let mut tampered = signed.clone();
    tampered.output[0].value += Amount::from_sat(1);
    assert!(verify_scripts(&tampered, &spent, dash).is_err());
    signed
}

/// Proves that a 3-payout spend of each wallet type is planned with change at the wallet's
/// change address, a fee of exactly rate × estimated vsize, and that after A and B sign it,
/// the finalized transaction's every input passes libbitcoinconsensus. Steps: fund 4 UTXOs,
/// plan at 7 sat/vB, check change and fee, sign, finalize, verify.
#[test]
fn plans_signs_and_verifies_three_payouts() {
    for wallet in [bitcoin_wallet(), dash_wallet()] {
        let (funding, utxos) = fund(&wallet, &[1_000_000, 2_000_000, 1_800_000, 600_000], 1);
        let payouts = payouts(&wallet);
        let fee_rate = rate(7);
        let plan = plan_spend(&wallet, &utxos, &payouts, fee_rate, CHANGE_INDEX).expect("plan");
        assert!(plan.inputs.len() >= 3, "4.45 M needs at least 3 utxos");

        let change = plan.change.expect("change");
        let change_output = &plan.psbt.unsigned_tx.output[change.vout as usize];
        assert_eq!(change.index, CHANGE_INDEX);
        assert_eq!(change.vout as usize, payouts.len(), "change is last");
        assert_eq!(change_output.value, change.amount);
        assert_eq!(
            change_output.script_pubkey,
            wallet
                .script_pubkey(Branch::Change, CHANGE_INDEX)
                .expect("change script")
        );
        let described = describe_spend(&plan.psbt, &wallet).expect("describe");
        assert_eq!(
            described.outputs[change.vout as usize].address,
            Some(
                wallet
                    .address(Branch::Change, CHANGE_INDEX)
                    .expect("change address")
            )
        );
        assert_eq!(plan.fee, fee_rate.fee_vb(plan.vsize).expect("fee"));

        check_signed_plan(&wallet, &plan, &payouts, fee_rate, &[&funding]);
    }
}

/// Proves that one signature per input is not enough: finalizing a PSBT signed by A alone
/// fails for both wallet types.
#[test]
fn one_signature_does_not_finalize() {
    for wallet in [bitcoin_wallet(), dash_wallet()] {
        let (_, utxos) = fund(&wallet, &[5_000_000], 2);
        let plan =
            plan_spend(&wallet, &utxos, &payouts(&wallet), rate(2), CHANGE_INDEX).expect("plan");
        let mut only_a = plan.psbt.clone();
        sign_psbt(&mut only_a, &seed(MNEMONIC_A), &wallet).expect("sign A");
        let err = finalize_psbt(&mut only_a).expect_err("one signature");
        assert!(matches!(err, PsbtError::Finalize(_)), "{err}");
    }
}

/// Proves that the same UTXOs in another order give the same plan.
#[test]
fn plan_is_deterministic() {
    for wallet in [bitcoin_wallet(), dash_wallet()] {
        let (_, mut utxos) = fund(&wallet, &[1_000_000, 2_000_000, 1_800_000, 600_000], 3);
        let first = plan_spend(&wallet, &utxos, &payouts(&wallet), rate(5), 0).expect("plan");
        utxos.reverse();
        utxos.swap(0, 2);
        let second = plan_spend(&wallet, &utxos, &payouts(&wallet), rate(5), 0).expect("plan");
        assert_eq!(first, second);
    }
}

/// Proves that when the rest after payouts and fee is below the dust limit, there is no
/// change output and the rest goes to the fee.
#[test]
fn dust_change_goes_to_fee() {
    let wallet = bitcoin_wallet();
    let payout = Payout {
        request_id: "only".into(),
        script_pubkey: ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([9; 20])),
        amount: Amount::from_sat(1_000_000),
    };
    // One wsh input + one P2WPKH output at 1 sat/vB is well under 300 vB: 1 000 400 leaves
    // less than 546 after the fee.
    let (funding, utxos) = fund(&wallet, &[1_000_400], 4);
    let plan =
        plan_spend(&wallet, &utxos, std::slice::from_ref(&payout), rate(1), 0).expect("plan");
    assert!(plan.change.is_none());
    assert_eq!(plan.psbt.unsigned_tx.output.len(), 1);
    assert_eq!(plan.fee, Amount::from_sat(400));
    assert!(plan.fee >= rate(1).fee_vb(plan.vsize).expect("fee"));
    check_signed_plan(&wallet, &plan, &[payout], rate(1), &[&funding]);
}

/// Proves that the error for too little money names the payouts plus fee and the UTXO total.
#[test]
fn insufficient_funds_names_both_numbers() {
    for wallet in [bitcoin_wallet(), dash_wallet()] {
        let (_, utxos) = fund(&wallet, &[1_000_000, 2_000_000], 5);
        let err = plan_spend(&wallet, &utxos, &payouts(&wallet), rate(3), 0).expect_err("short");
        let SpendError::InsufficientFunds { needed, available } = err else {
            panic!("{err}");
        };
        assert_eq!(available, Amount::from_sat(3_000_000));
        assert!(needed > Amount::from_sat(4_450_000), "{needed}");
        assert!(needed < Amount::from_sat(4_450_000 + 10_000), "{needed}");
        let text = SpendError::InsufficientFunds { needed, available }.to_string();
        assert!(text.contains(&needed.to_string()) && text.contains(&available.to_string()));
    }
}

/// Proves that a fee bump keeps the inputs and payouts, takes the extra fee from the change,
/// meets BIP125 rules 3, 4 and 6, and still verifies after signing. Steps: plan at 2 sat/vB,
/// bump to 20 sat/vB, compare, sign, finalize, verify.
#[test]
fn bump_fee_meets_bip125_and_verifies() {
    let wallet = bitcoin_wallet();
    let (funding, utxos) = fund(&wallet, &[3_000_000, 2_500_000], 6);
    let payouts = payouts(&wallet);
    let plan = plan_spend(&wallet, &utxos, &payouts, rate(2), CHANGE_INDEX).expect("plan");
    let bumped = bump_fee(&wallet, &plan, rate(20)).expect("bump");

    assert_eq!(bumped.inputs, plan.inputs);
    assert_eq!(bumped.payout_vouts, plan.payout_vouts);
    let old_change = plan.change.expect("change");
    let new_change = bumped.change.expect("change still there");
    assert_eq!(new_change.index, old_change.index);
    assert_eq!(
        old_change.amount - new_change.amount,
        bumped.fee - plan.fee,
        "only the change pays"
    );
    // BIP125 rule 4: new fee ≥ old fee + 1 sat/vB × new vsize.
    assert!(bumped.fee >= plan.fee + Amount::from_sat(bumped.vsize));
    // Rule 6: higher fee rate.
    assert!(bumped.fee.to_sat() * plan.vsize > plan.fee.to_sat() * bumped.vsize);
    assert_eq!(bumped.fee, rate(20).fee_vb(bumped.vsize).expect("fee"));
    for txin in &bumped.psbt.unsigned_tx.input {
        assert!(txin.sequence.is_rbf());
    }

    // A tiny bump is lifted to rule 4's minimum.
    let nudged = bump_fee(&wallet, &plan, rate(2)).expect("nudge");
    assert_eq!(nudged.fee, plan.fee + Amount::from_sat(nudged.vsize));

    check_signed_plan(&wallet, &bumped, &payouts, rate(20), &[&funding]);
}

/// Proves that bumping refuses a Dash spend, a spend without change, and a bump the change
/// cannot pay, and that a change that would become dust is dropped into the fee.
#[test]
fn bump_fee_limits() {
    let dash = dash_wallet();
    let (_, utxos) = fund(&dash, &[5_000_000], 7);
    let plan = plan_spend(&dash, &utxos, &payouts(&dash), rate(1), 0).expect("plan");
    let err = bump_fee(&dash, &plan, rate(5)).expect_err("no rbf on dash");
    assert!(matches!(err, SpendError::RbfNotSupported { .. }), "{err}");

    let wallet = bitcoin_wallet();
    let payouts = payouts(&wallet);
    // Change of ~20 000 sat: a bump to 500 sat/vB cannot be paid.
    let (_, utxos) = fund(&wallet, &[4_470_000], 8);
    let plan = plan_spend(&wallet, &utxos, &payouts, rate(1), 0).expect("plan");
    let change = plan.change.expect("change");
    let err = bump_fee(&wallet, &plan, rate(500)).expect_err("too small");
    let SpendError::ChangeTooSmallToBump {
        required_fee,
        available,
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!(available, plan.fee + change.amount);
    assert!(required_fee > available);

    // A bump that leaves less than dust in the change drops the change.
    let rest = plan.fee + change.amount;
    let no_change_vsize = plan.vsize - 43; // a P2WSH output is 43 bytes
    let sat_per_vb = (rest.to_sat() - DUST_LIMIT_SAT / 2) / plan.vsize;
    let dropped = bump_fee(&wallet, &plan, rate(sat_per_vb as u32)).expect("bump");
    assert!(dropped.change.is_none());
    assert_eq!(dropped.vsize, no_change_vsize);
    assert_eq!(dropped.fee, rest, "the whole change went to the fee");

    // A spend without change cannot be bumped.
    let err = bump_fee(&wallet, &dropped, rate(sat_per_vb as u32 + 10)).expect_err("no change");
    assert!(
        matches!(err, SpendError::ChangeTooSmallToBump { .. }),
        "{err}"
    );
}

/// Proves that the cosigner's description lists the inputs with their amounts, every output
/// with its address, recognises the real change by derivation and reports the exact fee.
#[test]
fn describe_spend_reports_outputs_change_and_fee() {
    for wallet in [bitcoin_wallet(), dash_wallet()] {
        let (_, utxos) = fund(&wallet, &[1_000_000, 2_000_000, 1_800_000, 600_000], 9);
        let payouts = payouts(&wallet);
        let plan = plan_spend(&wallet, &utxos, &payouts, rate(4), CHANGE_INDEX).expect("plan");
        let described = describe_spend(&plan.psbt, &wallet).expect("describe");
        assert_eq!(described.fee, plan.fee);
        assert_eq!(
            described.inputs,
            plan.inputs
                .iter()
                .map(|u| (u.outpoint, u.amount))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            described.input_total,
            plan.inputs.iter().map(|u| u.amount).sum::<Amount>()
        );
        assert_eq!(described.outputs.len(), payouts.len() + 1);
        for (output, payout) in described.outputs.iter().zip(&payouts) {
            assert_eq!(output.amount, payout.amount);
            assert_eq!(output.change_index, None);
            assert!(output.address.is_some(), "{payout:?}");
        }
        let change = described.outputs.last().expect("change");
        assert_eq!(change.change_index, Some(CHANGE_INDEX));
        if wallet.network().is_dash() {
            // Dash regtest P2SH addresses start with 8 or 9.
            let address = change.address.as_deref().expect("address");
            assert!(
                address.starts_with('8') || address.starts_with('9'),
                "{address}"
            );
        }
    }
}

/// Proves that an input of another wallet is refused: a UTXO of a wallet with another key C
/// slipped into the PSBT (its derivation names a stranger's fingerprint), and an input whose
/// derivation claims our path but whose spent script is not ours.
#[test]
fn describe_spend_detects_foreign_input() {
    for (ours, network, script) in [
        (
            bitcoin_wallet(),
            UtxoNetwork::BitcoinRegtest,
            MultisigScript::Wsh,
        ),
        (dash_wallet(), UtxoNetwork::DashRegtest, MultisigScript::Sh),
    ] {
        // {X, B, A}: key X instead of C, so a different wallet that shares A and B (and
        // their BIP48 account paths) with ours.
        let account = |words: &str| {
            MasterKey::from_seed(&seed(words))
                .expect("master")
                .bip48_account_xpub(network, script.bip48_script_type())
                .expect("account")
        };
        let keys = [
            account("zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong"),
            account(MNEMONIC_B),
            account(MNEMONIC_A),
        ];
        let theirs = UtxoWallet::new(network, script, keys).expect("their wallet");

        let (_, our_utxos) = fund(&ours, &[3_000_000, 2_000_000], 10);
        let (_, their_utxos) = fund(&theirs, &[3_000_000], 11);
        let payouts = payouts(&ours);
        let plan_ours = plan_spend(&ours, &our_utxos, &payouts, rate(2), 0).expect("ours");
        let plan_theirs =
            plan_spend(&theirs, &their_utxos, &payouts[..1], rate(2), 0).expect("theirs");

        // Append their input (with its PSBT fields) to our spend.
        let mut mixed = plan_ours.psbt.clone();
        mixed
            .unsigned_tx
            .input
            .push(plan_theirs.psbt.unsigned_tx.input[0].clone());
        mixed.inputs.push(plan_theirs.psbt.inputs[0].clone());
        let foreign = mixed.inputs.len() - 1;
        let err = describe_spend(&mixed, &ours).expect_err("foreign input");
        assert!(
            matches!(err, SpendError::ForeignInput { index } if index == foreign),
            "{err}"
        );

        // Their input, but with our derivation claimed: the script check catches it.
        let mut lying = mixed.clone();
        lying.inputs[foreign].bip32_derivation = plan_ours.psbt.inputs[0].bip32_derivation.clone();
        let err = describe_spend(&lying, &ours).expect_err("lying derivation");
        assert!(
            matches!(err, SpendError::ForeignInput { index } if index == foreign),
            "{err}"
        );

        // An input without any derivation.
        let mut bare = plan_ours.psbt.clone();
        bare.inputs[1].bip32_derivation.clear();
        let err = describe_spend(&bare, &ours).expect_err("no derivation");
        assert!(
            matches!(err, SpendError::ForeignInput { index: 1 }),
            "{err}"
        );

        // A non_witness_utxo that is not the spent transaction.
        let mut wrong_prev = plan_ours.psbt.clone();
        wrong_prev.inputs[0].non_witness_utxo = Some(plan_ours.psbt.unsigned_tx.clone());
        let err = describe_spend(&wrong_prev, &ours).expect_err("wrong prev tx");
        assert!(
            matches!(err, SpendError::UtxoMismatch { index: 0 }),
            "{err}"
        );
    }
}

/// Proves that an output is change only when its own derivation proves it: a payout that
/// carries the change output's `bip32_derivation` (a lie) is reported as a plain output, and
/// so is a change output whose derivation names another index.
#[test]
fn describe_spend_ignores_lying_change_derivation() {
    for wallet in [bitcoin_wallet(), dash_wallet()] {
        let (_, utxos) = fund(&wallet, &[3_000_000, 2_000_000], 12);
        let plan =
            plan_spend(&wallet, &utxos, &payouts(&wallet), rate(3), CHANGE_INDEX).expect("plan");
        let change_vout = plan.change.expect("change").vout as usize;

        let mut lying = plan.psbt.clone();
        lying.outputs[0] = lying.outputs[change_vout].clone();
        let described = describe_spend(&lying, &wallet).expect("describe");
        assert_eq!(
            described.outputs[0].change_index, None,
            "the lie is not trusted"
        );
        assert_eq!(
            described.outputs[change_vout].change_index,
            Some(CHANGE_INDEX)
        );
        assert_eq!(described.fee, plan.fee);

        // The change output claiming index 4 while paying index 3.
        let mut shifted = plan.psbt.clone();
        let other = plan_spend(
            &wallet,
            &utxos,
            &payouts(&wallet),
            rate(3),
            CHANGE_INDEX + 1,
        )
        .expect("plan");
        let other_change = other.change.expect("change").vout as usize;
        shifted.outputs[change_vout] = other.psbt.outputs[other_change].clone();
        let described = describe_spend(&shifted, &wallet).expect("describe");
        assert_eq!(described.outputs[change_vout].change_index, None);

        // A change output whose amount is inflated: the fee turns negative and is refused.
        let mut inflated = plan.psbt.clone();
        inflated.unsigned_tx.output[change_vout].value = Amount::from_sat(10_000_000);
        let err = describe_spend(&inflated, &wallet).expect_err("negative fee");
        assert!(matches!(err, SpendError::NegativeFee { .. }), "{err}");
    }
}

/// Proves that a Dash signature is bound to the `sh` redeem script: the signer refuses a
/// PSBT whose redeem script is not the wallet's at the path.
#[test]
fn sh_signer_refuses_foreign_redeem_script() {
    let wallet = dash_wallet();
    let (_, utxos) = fund(&wallet, &[5_000_000], 13);
    let plan = plan_spend(&wallet, &utxos, &payouts(&wallet), rate(1), 0).expect("plan");
    let mut tampered = plan.psbt.clone();
    tampered.inputs[0].redeem_script = Some(
        wallet
            .definite_descriptor(Branch::Receive, 7)
            .expect("descriptor")
            .explicit_script()
            .expect("script"),
    );
    let before = tampered.clone();
    let err = sign_psbt(&mut tampered, &seed(MNEMONIC_A), &wallet).expect_err("foreign");
    assert!(
        matches!(err, PsbtError::ForeignScript { input: 0, .. }),
        "{err}"
    );
    assert_eq!(tampered, before);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Invariants of `plan_spend` over random UTXO sets, payouts and fee rates, for both
    /// wallet types: either the UTXOs cannot pay (and the error's numbers say so), or the fee
    /// is inputs minus outputs and at least rate × estimated vsize, change (if any) is at
    /// least dust and, when present, the fee is exactly rate × vsize; payouts are kept in order.
    #[test]
    fn plan_invariants(
        amounts in proptest::collection::vec(600u64..5_000_000, 1..8),
        payout_amounts in proptest::collection::vec(546u64..3_000_000, 1..4),
        sat_per_vb in 1u32..60,
        dash in any::<bool>(),
    ) {
        let wallet = if dash { dash_wallet() } else { bitcoin_wallet() };
        let (_, utxos) = fund(&wallet, &amounts, 20);
        let payouts: Vec<Payout> = payout_amounts
            .iter()
            .enumerate()
            .map(|(i, amount)| Payout {
                request_id: format!("r{i}"),
                script_pubkey: ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array([i as u8; 20])),
                amount: Amount::from_sat(*amount),
            })
            .collect();
        let fee_rate = rate(sat_per_vb);
        match plan_spend(&wallet, &utxos, &payouts, fee_rate, 0) {
            Err(SpendError::InsufficientFunds { needed, available }) => {
                prop_assert!(needed > available);
                prop_assert_eq!(available, amounts.iter().map(|a| Amount::from_sat(*a)).sum::<Amount>());
            }
            Err(other) => prop_assert!(false, "{}", other),
            Ok(plan) => {
                let tx = &plan.psbt.unsigned_tx;
                let input_total: Amount = plan.inputs.iter().map(|u| u.amount).sum();
                let output_total: Amount = tx.output.iter().map(|o| o.value).sum();
                prop_assert_eq!(input_total - output_total, plan.fee);
                prop_assert!(plan.fee >= fee_rate.fee_vb(plan.vsize).expect("fee"));
                for (i, payout) in payouts.iter().enumerate() {
                    prop_assert_eq!(&tx.output[i].script_pubkey, &payout.script_pubkey);
                    prop_assert_eq!(tx.output[i].value, payout.amount);
                }
                match plan.change {
                    Some(change) => {
                        prop_assert!(change.amount.to_sat() >= DUST_LIMIT_SAT);
                        prop_assert_eq!(plan.fee, fee_rate.fee_vb(plan.vsize).expect("fee"));
                        prop_assert_eq!(tx.output.len(), payouts.len() + 1);
                    }
                    None => prop_assert_eq!(tx.output.len(), payouts.len()),
                }
                let described = describe_spend(&plan.psbt, &wallet).expect("describe");
                prop_assert_eq!(described.fee, plan.fee);
            }
        }
    }
}
