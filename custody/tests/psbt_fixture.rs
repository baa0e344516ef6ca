//! Bitcoin Core vectors for PSBT signing: `shared/fixtures/bitcoin-core/multisig_spend.json`
//! (recorded from a real Bitcoin Core, see the README beside it). A watch-only wallet built a
//! PSBT (version 2) spending two outputs of the regtest `wsh(sortedmulti(2,A,B,C))` wallet;
//! Core signed it with A alone and with B alone, combined and finalized it. This crate must
//! produce the same signatures (RFC6979 + low R ⇒ identical bytes), the same combined PSBT
//! and the same final transaction.

use std::path::PathBuf;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::psbt::Psbt;
use coinhub_custody::derivation::MasterKey;
use coinhub_custody::mnemonic::{Mnemonic, Seed};
use coinhub_custody::psbt::{
    PsbtError, combine_psbt, finalize_psbt, parse_psbt, psbt_to_base64, sign_psbt,
};
use coinhub_custody::utxo::{MultisigScript, UtxoNetwork, UtxoWallet};
use serde_json::Value;

const MNEMONIC_A: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
const MNEMONIC_B: &str =
    "legal winner thank year wave sausage worth useful legal winner thank yellow";
const MNEMONIC_C: &str =
    "letter advice cage absurd amount doctor acoustic avoid letter advice cage above";

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/bitcoin-core/multisig_spend.json");
    let text = std::fs::read_to_string(&path).expect("read multisig_spend.json");
    serde_json::from_str(&text).expect("fixture json")
}

/// The `result` of the exchange with this method (and label, when given).
fn result<'a>(fixture: &'a Value, method: &str, label: Option<&str>) -> &'a Value {
    fixture["exchanges"]
        .as_array()
        .expect("exchanges")
        .iter()
        .find(|exchange| {
            exchange["request"]["method"] == method
                && label.is_none_or(|label| exchange["label"] == label)
        })
        .map(|exchange| &exchange["response"]["result"])
        .unwrap_or_else(|| panic!("no {method} {label:?} exchange"))
}

fn psbt_of(value: &Value) -> Psbt {
    let text = value
        .as_str()
        .or_else(|| value["psbt"].as_str())
        .expect("psbt text");
    parse_psbt(text).expect("parse psbt")
}

fn seed(words: &str) -> Seed {
    Mnemonic::parse(words).expect("mnemonic").to_seed()
}

fn wallet() -> UtxoWallet {
    let keys = [MNEMONIC_A, MNEMONIC_B, MNEMONIC_C].map(|words| {
        MasterKey::from_seed(&seed(words))
            .expect("master")
            .bip48_account_xpub(
                UtxoNetwork::BitcoinRegtest,
                MultisigScript::Wsh.bip48_script_type(),
            )
            .expect("account")
    });
    UtxoWallet::new(UtxoNetwork::BitcoinRegtest, MultisigScript::Wsh, keys).expect("wallet")
}

#[test]
fn signatures_match_bitcoin_core() {
    let fixture = fixture();
    let wallet = wallet();
    let unsigned = psbt_of(result(&fixture, "walletcreatefundedpsbt", None));
    assert_eq!(unsigned.inputs.len(), 2);
    for (words, label) in [
        (MNEMONIC_A, "signed by key A only"),
        (MNEMONIC_B, "signed by key B only"),
    ] {
        let core = psbt_of(result(&fixture, "walletprocesspsbt", Some(label)));
        let mut ours = unsigned.clone();
        let report = sign_psbt(&mut ours, &seed(words), &wallet).expect("sign");
        assert_eq!(report.signed, vec![0, 1], "{label}");
        assert!(report.skipped.is_empty(), "{label}");
        for (input, (mine, theirs)) in ours.inputs.iter().zip(&core.inputs).enumerate() {
            assert_eq!(mine.partial_sigs.len(), 1, "{label} input {input}");
            assert_eq!(
                mine.partial_sigs, theirs.partial_sigs,
                "{label} input {input}: same signature bytes as Core"
            );
        }
        assert_eq!(ours, core, "{label}: the whole PSBT equals Core's");
        assert_eq!(psbt_to_base64(&ours), psbt_to_base64(&core), "{label}");

        // Signing twice is idempotent (deterministic nonces).
        let mut again = ours.clone();
        sign_psbt(&mut again, &seed(words), &wallet).expect("sign again");
        assert_eq!(again, ours, "{label}");
    }
}

#[test]
fn combine_and_finalize_match_bitcoin_core() {
    let fixture = fixture();
    let wallet = wallet();
    let unsigned = psbt_of(result(&fixture, "walletcreatefundedpsbt", None));
    let mut signed_a = unsigned.clone();
    sign_psbt(&mut signed_a, &seed(MNEMONIC_A), &wallet).expect("sign A");
    let mut signed_b = unsigned.clone();
    sign_psbt(&mut signed_b, &seed(MNEMONIC_B), &wallet).expect("sign B");

    // One signature is not enough (Core: finalizepsbt → complete: false).
    let core_one = result(
        &fixture,
        "finalizepsbt",
        Some("cannot finalize with one signature"),
    );
    assert_eq!(core_one["complete"], false);
    let mut only_a = signed_a.clone();
    let err = finalize_psbt(&mut only_a).expect_err("one of two signatures");
    assert!(matches!(err, PsbtError::Finalize(_)), "{err}");

    let mut combined = signed_a;
    combine_psbt(&mut combined, signed_b).expect("combine");
    let core_combined = psbt_of(result(&fixture, "combinepsbt", None));
    assert_eq!(
        combined, core_combined,
        "combined PSBT equals Core's combinepsbt"
    );

    let tx = finalize_psbt(&mut combined).expect("finalize");
    let core_final = result(&fixture, "finalizepsbt", None);
    let core_final = if core_final["complete"] == true {
        core_final
    } else {
        fixture["exchanges"]
            .as_array()
            .expect("exchanges")
            .iter()
            .filter(|exchange| exchange["request"]["method"] == "finalizepsbt")
            .map(|exchange| &exchange["response"]["result"])
            .find(|result| result["complete"] == true)
            .expect("complete finalizepsbt")
    };
    let hex = core_final["hex"].as_str().expect("final hex");
    assert_eq!(serialize_hex(&tx), hex, "final transaction equals Core's");
    let sent = result(&fixture, "sendrawtransaction", None);
    assert_eq!(tx.compute_txid().to_string(), sent.as_str().expect("txid"));
    // Witness: empty, signatures in the script's public key order, witness script.
    for input in &tx.input {
        assert_eq!(input.witness.len(), 4);
        assert!(input.witness.nth(0).expect("empty").is_empty());
    }
}

#[test]
fn refuses_foreign_inputs() {
    let fixture = fixture();
    let wallet = wallet();
    let unsigned = psbt_of(result(&fixture, "walletcreatefundedpsbt", None));

    // A witness script that is not ours at the path.
    let mut tampered = unsigned.clone();
    let other = wallet
        .definite_descriptor(coinhub_custody::utxo::Branch::Receive, 7)
        .expect("descriptor")
        .explicit_script()
        .expect("script");
    tampered.inputs[0].witness_script = Some(other);
    let before = tampered.clone();
    let err = sign_psbt(&mut tampered, &seed(MNEMONIC_A), &wallet).expect_err("foreign");
    assert!(
        matches!(err, PsbtError::ForeignScript { input: 0, .. }),
        "{err}"
    );
    assert_eq!(tampered, before, "nothing written on error");

    // A derivation path outside the BIP48 account.
    let mut tampered = unsigned.clone();
    let entries = std::mem::take(&mut tampered.inputs[1].bip32_derivation);
    for (key, (fingerprint, path)) in entries {
        let steps: Vec<_> = path.into_iter().copied().collect();
        let mut steps = steps;
        steps[1] = bitcoin::bip32::ChildNumber::from_hardened_idx(0).expect("0h");
        tampered.inputs[1]
            .bip32_derivation
            .insert(key, (fingerprint, steps.into()));
    }
    let err = sign_psbt(&mut tampered, &seed(MNEMONIC_A), &wallet).expect_err("path");
    assert!(
        matches!(err, PsbtError::NotUnderAccount { input: 1, .. }),
        "{err}"
    );

    // A key that is not one of the wallet's.
    let stranger = seed("zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong");
    let err = sign_psbt(&mut unsigned.clone(), &stranger, &wallet).expect_err("stranger");
    assert!(matches!(err, PsbtError::NotAWalletKey { .. }), "{err}");
}
