//! Bitcoin Core vectors for the 2-of-3 UTXO wallets: `shared/fixtures/bitcoin-core/`
//! `descriptors_main.json` and `descriptors_test.json` (recorded from a real Bitcoin Core,
//! see the README beside them). Every account xpub, descriptor (with checksum), address and
//! scriptPubKey in those files is checked here, derived from the test mnemonics with this
//! crate. Dash reuses the `sh` vectors: same script, Dash version bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use bitcoin::bip32::{ChildNumber, DerivationPath};

use coinhub_custody::derivation::MasterKey;
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::utxo::{
    AccountXpub, Bip48ScriptType, Branch, DASH_MAINNET_P2SH_VERSION, DASH_TESTNET_P2SH_VERSION,
    MultisigScript, UtxoNetwork, UtxoWallet, bip48_account_path, dash_address,
};
use serde::Deserialize;

/// Addresses per branch in the fixtures (`deriveaddresses` range `[0, 19]`).
const ADDRESS_COUNT: u32 = 20;

/// One `descriptors_*.json` file (the parts these tests read).
#[derive(Deserialize)]
struct Fixture {
    keys: BTreeMap<String, FixtureKey>,
    derived: BTreeMap<String, FixtureDerived>,
    exchanges: Vec<Exchange>,
}

#[derive(Deserialize)]
struct FixtureKey {
    mnemonic: String,
    passphrase: String,
    master_fingerprint: String,
    path: String,
    xpub: String,
}

#[derive(Deserialize)]
struct FixtureDerived {
    descriptor: String,
    addresses_0_19: Vec<String>,
    script_pubkeys_0_4: Vec<String>,
}

/// One recorded JSON-RPC call and reply.
#[derive(Deserialize)]
struct Exchange {
    label: String,
    request: serde_json::Value,
    response: serde_json::Value,
}

fn load(name: &str) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/bitcoin-core")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read fixture {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {name}: {error}"))
}

/// The account key of one fixture key, derived from its mnemonic with this crate.
fn derive_account(key: &FixtureKey, network: UtxoNetwork) -> AccountXpub {
    let mnemonic = Mnemonic::parse(&key.mnemonic).expect("fixture mnemonic");
    let seed = mnemonic.to_seed_with_passphrase(&key.passphrase);
    let master = MasterKey::from_seed(&seed).expect("master key");
    // Every fixture key is at the P2WSH account `m/48h/coin'/0h/2h`.
    master
        .bip48_account_xpub(network, Bip48ScriptType::P2wsh)
        .expect("account xpub")
}

/// The three fixture accounts `[A, B, C]`, each checked against the file's fingerprint, path
/// and xpub.
fn accounts(fixture: &Fixture, network: UtxoNetwork) -> [AccountXpub; 3] {
    ["A", "B", "C"].map(|name| {
        let key = &fixture.keys[name];
        let account = derive_account(key, network);
        assert_eq!(
            account.master_fingerprint().to_string(),
            key.master_fingerprint,
            "{name}"
        );
        assert_eq!(core_path(account.path()), key.path, "{name}");
        assert_eq!(account.xpub().to_string(), key.xpub, "{name}");
        assert_eq!(
            account.path(),
            &bip48_account_path(network, Bip48ScriptType::P2wsh),
            "{name}"
        );
        account
    })
}

/// A path as the fixtures write it: `m/48h/0h/0h/2h`.
fn core_path(path: &DerivationPath) -> String {
    path.into_iter()
        .map(|step| format!("/{step:#}"))
        .fold("m".to_owned(), |text, step| text + &step)
}

/// `wsh/0` → (`wsh`, receive), …, `sh-wsh/1` → (`sh(wsh)`, change).
fn parse_derived_key(name: &str) -> (MultisigScript, Branch) {
    let (script, branch) = name.split_once('/').expect("script/branch");
    let script = match script {
        "wsh" => MultisigScript::Wsh,
        "sh" => MultisigScript::Sh,
        "sh-wsh" => MultisigScript::ShWsh,
        other => panic!("unknown script {other}"),
    };
    let branch = match branch {
        "0" => Branch::Receive,
        "1" => Branch::Change,
        other => panic!("unknown branch {other}"),
    };
    (script, branch)
}

/// The scriptPubKey Bitcoin Core's `validateaddress` gave for every address in the file.
fn recorded_script_pubkeys(fixture: &Fixture) -> BTreeMap<String, String> {
    fixture
        .exchanges
        .iter()
        .filter(|exchange| exchange.request["method"] == "validateaddress")
        .map(|exchange| {
            let result = &exchange.response["result"];
            let address = result["address"].as_str().expect("address").to_owned();
            let script = result["scriptPubKey"]
                .as_str()
                .expect("scriptPubKey")
                .to_owned();
            (address, script)
        })
        .collect()
}

/// Checks a whole fixture file against wallets built on `network`: xpubs, all six descriptor
/// strings (with checksum), 20 receive and 20 change addresses per script, the 5 listed
/// scriptPubKeys per branch, every `validateaddress` scriptPubKey, and every recorded
/// `getdescriptorinfo` and `deriveaddresses` reply.
fn check_fixture(fixture: &Fixture, network: UtxoNetwork) {
    let keys = accounts(fixture, network);
    let recorded = recorded_script_pubkeys(fixture);
    assert!(!recorded.is_empty());
    let mut addresses_checked = 0;
    let mut scripts_checked = 0;
    let mut by_descriptor = BTreeMap::new();
    assert_eq!(fixture.derived.len(), 6);
    for (name, derived) in &fixture.derived {
        let (script, branch) = parse_derived_key(name);
        let wallet = UtxoWallet::new(network, script, keys.clone()).expect("wallet");
        let descriptor = wallet.descriptor(branch);
        assert_eq!(descriptor, derived.descriptor, "{name}");
        assert_eq!(derived.addresses_0_19.len(), ADDRESS_COUNT as usize);
        for index in 0..ADDRESS_COUNT {
            let address = wallet.derive(branch, index).expect("derive");
            assert_eq!(address.branch, branch);
            assert_eq!(address.index, index);
            assert_eq!(
                address.address, derived.addresses_0_19[index as usize],
                "{name} {index}"
            );
            assert_eq!(
                wallet.address(branch, index).expect("address"),
                address.address
            );
            let script_hex = address.script_pubkey.to_hex_string();
            assert_eq!(
                wallet.script_pubkey(branch, index).expect("script"),
                address.script_pubkey
            );
            if let Some(listed) = derived.script_pubkeys_0_4.get(index as usize) {
                assert_eq!(&script_hex, listed, "{name} {index}");
                scripts_checked += 1;
            }
            if let Some(from_core) = recorded.get(&address.address) {
                assert_eq!(&script_hex, from_core, "{name} {index}");
                scripts_checked += 1;
            }
            addresses_checked += 1;
        }
        by_descriptor.insert(descriptor, (wallet, branch));
    }
    assert_eq!(addresses_checked, 6 * ADDRESS_COUNT);
    assert!(scripts_checked >= 6 * 5, "{scripts_checked}");

    // The raw recorded replies agree too (independently of the `derived` summary).
    let mut replies_checked = 0;
    for exchange in &fixture.exchanges {
        let method = exchange.request["method"].as_str().expect("method");
        let result = &exchange.response["result"];
        match method {
            "getdescriptorinfo" => {
                let descriptor = result["descriptor"].as_str().expect("descriptor");
                assert!(by_descriptor.contains_key(descriptor), "{descriptor}");
                let checksum = result["checksum"].as_str().expect("checksum");
                assert!(descriptor.ends_with(&format!("#{checksum}")));
                replies_checked += 1;
            }
            "deriveaddresses" => {
                let descriptor = exchange.request["params"][0].as_str().expect("descriptor");
                let (wallet, branch) = &by_descriptor[descriptor];
                let expected: Vec<String> = (0..ADDRESS_COUNT)
                    .map(|index| wallet.address(*branch, index).expect("address"))
                    .collect();
                let from_core: Vec<String> =
                    serde_json::from_value(result.clone()).expect("address list");
                assert_eq!(expected, from_core, "{}", exchange.label);
                replies_checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(replies_checked, 12);
}

/// Proves the mainnet vectors: the BIP48 `m/48h/0h/0h/2h` xpubs of mnemonics A, B, C, the
/// `wsh`, `sh` and `sh(wsh)` receive/change descriptors with Bitcoin Core's checksums, and
/// all 120 addresses and their scriptPubKeys. Steps: derive from the mnemonics, build the
/// wallets, compare with `descriptors_main.json`.
#[test]
fn bitcoin_core_mainnet_vectors() {
    check_fixture(&load("descriptors_main.json"), UtxoNetwork::Bitcoin);
}

/// Proves the test-network vectors (`m/48h/1h/0h/2h`, `tpub`, `bcrt1…`/`2…`) the same way,
/// from `descriptors_test.json`, which Bitcoin Core recorded on regtest.
#[test]
fn bitcoin_core_regtest_vectors() {
    check_fixture(&load("descriptors_test.json"), UtxoNetwork::BitcoinRegtest);
}

/// Proves that testnet3, testnet4 and signet use the regtest vectors' keys, descriptors and
/// scriptPubKeys (same `tpub` keys, coin type 1) and differ only in the bech32 prefix:
/// `tb1…` instead of `bcrt1…` for `wsh` (same witness program), the same `2…` P2SH addresses.
#[test]
fn bitcoin_testnet_and_signet_share_the_regtest_scripts() {
    let fixture = load("descriptors_test.json");
    let regtest_keys = accounts(&fixture, UtxoNetwork::BitcoinRegtest);
    for network in [
        UtxoNetwork::BitcoinTestnet,
        UtxoNetwork::BitcoinTestnet4,
        UtxoNetwork::BitcoinSignet,
    ] {
        let keys = accounts(&fixture, network);
        assert_eq!(keys, regtest_keys);
        for (name, derived) in &fixture.derived {
            let (script, branch) = parse_derived_key(name);
            let wallet = UtxoWallet::new(network, script, keys.clone()).expect("wallet");
            assert_eq!(
                wallet.descriptor(branch),
                derived.descriptor,
                "{network} {name}"
            );
            for (index, core_address) in (0u32..).zip(&derived.addresses_0_19) {
                let address = wallet.derive(branch, index).expect("derive");
                if let Some(listed) = derived.script_pubkeys_0_4.get(index as usize) {
                    assert_eq!(
                        &address.script_pubkey.to_hex_string(),
                        listed,
                        "{network} {name}"
                    );
                }
                let expected = match core_address.strip_prefix("bcrt1") {
                    Some(bech32_rest) => {
                        // Same witness program under another hrp: re-encode, do not splice text.
                        let program = bitcoin::Address::from_str(core_address)
                            .expect("core address")
                            .assume_checked()
                            .script_pubkey();
                        assert_eq!(address.script_pubkey, program, "{bech32_rest}");
                        bitcoin::Address::from_script(&program, bitcoin::Network::Testnet)
                            .expect("segwit address")
                            .to_string()
                    }
                    None => core_address.clone(),
                };
                assert_eq!(address.address, expected, "{network} {name} {index}");
                if script == MultisigScript::Wsh {
                    assert!(address.address.starts_with("tb1q"), "{}", address.address);
                }
            }
        }
    }
}

/// Decodes a Base58Check address into (version byte, 20-byte hash).
fn base58check_payload(address: &str) -> (u8, Vec<u8>) {
    let payload = bitcoin::base58::decode_check(address).expect("base58check");
    assert_eq!(payload.len(), 21, "{address}");
    (payload[0], payload[1..].to_vec())
}

/// The Dash cases: fixture file, Dash network, the Bitcoin network the file was recorded on,
/// Dash's P2SH version byte and the possible first characters of its addresses.
const DASH_CASES: [(&str, UtxoNetwork, UtxoNetwork, u8, &[char]); 3] = [
    (
        "descriptors_main.json",
        UtxoNetwork::Dash,
        UtxoNetwork::Bitcoin,
        DASH_MAINNET_P2SH_VERSION,
        &['7'],
    ),
    (
        "descriptors_test.json",
        UtxoNetwork::DashTestnet,
        UtxoNetwork::BitcoinRegtest,
        DASH_TESTNET_P2SH_VERSION,
        &['8', '9'],
    ),
    (
        "descriptors_test.json",
        UtxoNetwork::DashRegtest,
        UtxoNetwork::BitcoinRegtest,
        DASH_TESTNET_P2SH_VERSION,
        &['8', '9'],
    ),
];

/// The fixture's account xpub with the origin path's coin type set to `dash`'s (5 on mainnet;
/// unchanged, 1, on test networks): the same public key, labelled for a Dash wallet.
fn as_dash_key(key: &AccountXpub, dash: UtxoNetwork) -> AccountXpub {
    let mut steps: Vec<ChildNumber> = key.path().into_iter().copied().collect();
    steps[1] = ChildNumber::Hardened {
        index: dash.coin_type(),
    };
    AccountXpub::new(
        key.master_fingerprint(),
        DerivationPath::from(steps),
        *key.xpub(),
    )
    .expect("still a bip48 account key")
}

/// Proves that Dash's `sh(sortedmulti(2,…))` scriptPubKeys equal Bitcoin Core's `sh` vectors
/// for the same three public keys (same script), and that each Dash address is Base58Check of
/// version 16 (mainnet, `7…`) or 19 (testnet and regtest, `8…`/`9…`) and the same HASH160 as
/// Bitcoin Core's `3…`/`2…` address. Steps: take the fixture keys, label them with Dash's coin
/// type, build Dash and Bitcoin `sh` wallets, compare the 20 receive and 20 change outputs.
#[test]
fn dash_sh_scripts_equal_bitcoin_core_sh_vectors() {
    for (file, dash, bitcoin, version, first_chars) in DASH_CASES {
        let fixture = load(file);
        let bitcoin_keys = accounts(&fixture, bitcoin);
        let recorded = recorded_script_pubkeys(&fixture);
        let bitcoin_wallet =
            UtxoWallet::new(bitcoin, MultisigScript::Sh, bitcoin_keys.clone()).expect("bitcoin");
        let dash_keys = bitcoin_keys.each_ref().map(|key| as_dash_key(key, dash));
        let dash_wallet = UtxoWallet::new(dash, MultisigScript::Sh, dash_keys).expect("dash");
        let bitcoin_p2sh_version = if bitcoin == UtxoNetwork::Bitcoin {
            5
        } else {
            196
        };
        for (branch, name) in [(Branch::Receive, "sh/0"), (Branch::Change, "sh/1")] {
            let derived = &fixture.derived[name];
            for index in 0..ADDRESS_COUNT {
                let dash_address_at = dash_wallet.derive(branch, index).expect("dash address");
                let core_address = &derived.addresses_0_19[index as usize];
                let script_hex = dash_address_at.script_pubkey.to_hex_string();
                assert_eq!(
                    dash_address_at.script_pubkey,
                    bitcoin_wallet.script_pubkey(branch, index).expect("script")
                );
                if let Some(listed) = derived.script_pubkeys_0_4.get(index as usize) {
                    assert_eq!(&script_hex, listed, "{dash} {name} {index}");
                }
                if let Some(from_core) = recorded.get(core_address) {
                    assert_eq!(&script_hex, from_core, "{dash} {name} {index}");
                }

                let text = &dash_address_at.address;
                let (got_version, hash) = base58check_payload(text);
                assert_eq!(got_version, version, "{text}");
                let first = text.chars().next().expect("non-empty");
                assert!(first_chars.contains(&first), "{text}");
                let (core_version, core_hash) = base58check_payload(core_address);
                assert_eq!(core_version, bitcoin_p2sh_version, "{core_address}");
                assert_eq!(hash, core_hash, "{dash} {name} {index}");
                // OP_HASH160 <20-byte hash> OP_EQUAL
                let mut p2sh = vec![0xa9, 0x14];
                p2sh.extend_from_slice(&hash);
                p2sh.push(0x87);
                assert_eq!(dash_address_at.script_pubkey.as_bytes(), p2sh.as_slice());
                assert_eq!(
                    dash_address(&dash_address_at.script_pubkey, dash).as_deref(),
                    Some(text.as_str())
                );
            }
        }
    }
}

/// Proves Dash account keys derived from the mnemonics: mainnet at `m/48h/5h/0h/2h` (`xpub`),
/// test networks at `m/48h/1h/0h/2h`, equal to the fixture's `tpub`s; the wallets hand out
/// `7…` (mainnet) and `8…`/`9…` (testnet, regtest) addresses, and refuse `wsh`.
#[test]
fn dash_wallets_from_mnemonics() {
    for (file, dash, _, version, first_chars) in DASH_CASES {
        let fixture = load(file);
        let keys = ["A", "B", "C"].map(|name| derive_account(&fixture.keys[name], dash));
        let expected_path = bip48_account_path(dash, Bip48ScriptType::P2wsh);
        for key in &keys {
            assert_eq!(key.path(), &expected_path);
        }
        assert_eq!(
            core_path(keys[0].path()),
            format!("m/48h/{}h/0h/2h", dash.coin_type())
        );
        assert_eq!(keys[0].master_fingerprint().to_string(), "73c5da0a");
        if dash == UtxoNetwork::Dash {
            assert!(keys[0].xpub().to_string().starts_with("xpub"));
            assert_ne!(
                keys[0].xpub().to_string(),
                fixture.keys["A"].xpub,
                "coin type 5 ≠ 0"
            );
        } else {
            assert_eq!(keys[0].xpub().to_string(), fixture.keys["A"].xpub);
        }
        assert!(UtxoWallet::new(dash, MultisigScript::Wsh, keys.clone()).is_err());
        let wallet = UtxoWallet::new(dash, MultisigScript::Sh, keys).expect("dash wallet");
        assert!(
            wallet
                .receive_descriptor()
                .starts_with("sh(sortedmulti(2,[73c5da0a/48h/")
        );
        assert!(wallet.change_descriptor().contains("/1/*,"));
        for branch in [Branch::Receive, Branch::Change] {
            for index in 0..ADDRESS_COUNT {
                let text = wallet.address(branch, index).expect("address");
                assert_eq!(base58check_payload(&text).0, version, "{text}");
                let first = text.chars().next().expect("non-empty");
                assert!(first_chars.contains(&first), "{text}");
            }
        }
    }
}
