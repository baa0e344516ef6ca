//! Withdrawal destination and amount validation (issue 4, item 2): EIP-55, BIP173/BIP350,
//! Base58Check version bytes for Bitcoin and Dash, and every amount refusal.
#![allow(clippy::unwrap_used)]

use alloy::primitives::U256;
use bitcoin::hashes::Hash as _;
use bitcoin::{Address, Network, NetworkKind, PubkeyHash, ScriptHash};
use coinhub_chains::destination::{
    AmountError, ChecksumScheme, DashAddressKind, Destination, DestinationError,
    DestinationNetwork, parse_destination, validate_amount,
};

const BTC_MAIN: DestinationNetwork = DestinationNetwork::Bitcoin(Network::Bitcoin);
const BTC_TEST: DestinationNetwork = DestinationNetwork::Bitcoin(Network::Testnet);
const BTC_REGTEST: DestinationNetwork = DestinationNetwork::Bitcoin(Network::Regtest);
const DASH_MAIN: DestinationNetwork = DestinationNetwork::Dash { testnet: false };
const DASH_TEST: DestinationNetwork = DestinationNetwork::Dash { testnet: true };

const HASH: [u8; 20] = [
    0x75, 0x1e, 0x76, 0xe8, 0x19, 0x91, 0x96, 0xd4, 0x54, 0x94, 0x1c, 0x45, 0xd1, 0xb3, 0xa3, 0x23,
    0xf1, 0x43, 0x3b, 0xd6,
];

fn wrong_network_found(network: DestinationNetwork, text: &str) -> String {
    match parse_destination(network, text) {
        Err(DestinationError::WrongNetwork {
            text: t,
            expected,
            found,
        }) => {
            assert_eq!(t, text);
            assert_eq!(expected, network);
            found
        }
        other => panic!("{text} on {network}: expected WrongNetwork, got {other:?}"),
    }
}

fn assert_malformed(network: DestinationNetwork, text: &str) -> String {
    match parse_destination(network, text) {
        Err(DestinationError::Malformed { text: t, reason }) => {
            assert_eq!(t, text);
            assert!(!reason.is_empty());
            reason
        }
        other => panic!("{text:?} on {network}: expected Malformed, got {other:?}"),
    }
}

fn assert_bad_checksum(network: DestinationNetwork, text: &str, scheme: ChecksumScheme) {
    match parse_destination(network, text) {
        Err(DestinationError::BadChecksum { text: t, scheme: s }) => {
            assert_eq!(t, text);
            assert_eq!(s, scheme, "{text}");
        }
        other => panic!("{text} on {network}: expected BadChecksum, got {other:?}"),
    }
}

// ---------------------------------------------------------------- EVM (EIP-55)

/// The test vectors of EIP-55 ("Test Cases"): all caps, all lower, normal.
const EIP55_ALL_CAPS: [&str; 2] = [
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
];
const EIP55_ALL_LOWER: [&str; 2] = [
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
];
const EIP55_NORMAL: [&str; 4] = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
];

#[test]
fn eip55_mixed_case_vectors_are_accepted_and_kept() {
    for text in EIP55_NORMAL {
        match parse_destination(DestinationNetwork::Evm, text).unwrap() {
            Destination::Evm {
                address,
                checksummed,
            } => {
                assert_eq!(checksummed, text);
                assert_eq!(address.to_checksum(None), text);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn eip55_all_lower_and_all_upper_are_accepted_and_normalized() {
    // The all-caps and all-lower vectors are themselves valid; either case of any vector
    // is accepted (no checksum information) and normalized to the EIP-55 form.
    for text in EIP55_ALL_CAPS.into_iter().chain(EIP55_ALL_LOWER) {
        let d = parse_destination(DestinationNetwork::Evm, text).unwrap();
        assert_eq!(d.canonical_text(), text);
        assert!(d.script_pubkey().is_none());
    }
    for text in EIP55_NORMAL {
        let lower = format!("0x{}", text[2..].to_ascii_lowercase());
        let upper = format!("0x{}", text[2..].to_ascii_uppercase());
        for variant in [lower, upper] {
            let d = parse_destination(DestinationNetwork::Evm, &variant).unwrap();
            assert_eq!(d.canonical_text(), text, "{variant}");
        }
    }
}

#[test]
fn eip55_one_changed_letter_case_is_a_bad_checksum() {
    for text in EIP55_NORMAL {
        // Flip the case of the last letter (a–f) of the hex part: still mixed case.
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars
            .iter()
            .rposition(|c| c.is_ascii_alphabetic() && *c != 'x')
            .unwrap();
        chars[i] = if chars[i].is_ascii_uppercase() {
            chars[i].to_ascii_lowercase()
        } else {
            chars[i].to_ascii_uppercase()
        };
        let changed: String = chars.into_iter().collect();
        assert_ne!(changed, text);
        assert_bad_checksum(DestinationNetwork::Evm, &changed, ChecksumScheme::Eip55);
    }
    let e = parse_destination(
        DestinationNetwork::Evm,
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
    )
    .unwrap_err();
    assert!(e.to_string().contains("EIP-55"), "{e}");
}

#[test]
fn evm_zero_address_is_refused() {
    let zero = format!("0x{}", "0".repeat(40));
    assert_eq!(
        parse_destination(DestinationNetwork::Evm, &zero),
        Err(DestinationError::ZeroAddress { text: zero.clone() })
    );
}

#[test]
fn evm_malformed() {
    let good = &EIP55_ALL_LOWER[0][2..];
    for text in [
        "".to_owned(),
        good.to_owned(),               // no 0x
        format!("0x{}", &good[..39]),  // 39 digits
        format!("0x{good}00"),         // 42 digits
        format!("0x{}g", &good[..39]), // non-hex
        format!(" 0x{good}"),          // whitespace
        format!("0x{good}\n"),
        format!("0X{good}"), // prefix must be 0x
        "0x".to_owned(),
        "not an address".to_owned(),
        "0xé0000000000000000000000000000000000000".to_owned(),
        "ethereum:0x52908400098527886E0F7030069857D2E4169EE7".to_owned(),
    ] {
        assert_malformed(DestinationNetwork::Evm, &text);
    }
}

#[test]
fn utxo_addresses_are_the_wrong_network_for_evm() {
    let found = wrong_network_found(
        DestinationNetwork::Evm,
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
    );
    assert!(found.starts_with("bitcoin"), "{found}");
    let found = wrong_network_found(
        DestinationNetwork::Evm,
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
    );
    assert!(found.starts_with("bitcoin mainnet"), "{found}");
    let dash = dash_address(76, HASH);
    assert_eq!(
        wrong_network_found(DestinationNetwork::Evm, &dash),
        "dash mainnet"
    );
}

// ------------------------------------------------------- Bitcoin (BIP173 / BIP350)

/// Valid segwit vectors of BIP350 (which supersede BIP173's for v1+), with their
/// scriptPubKeys, restricted to standard outputs (v0 P2WPKH/P2WSH, v1 32-byte P2TR).
const BIP350_VALID_STANDARD: [(&str, Network, &str); 6] = [
    (
        "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
        Network::Bitcoin,
        "0014751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        Network::Testnet,
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        Network::Testnet,
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        Network::Testnet,
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        Network::Bitcoin,
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
    (
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        Network::Bitcoin,
        "0014751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
];

#[test]
fn bip173_bip350_valid_vectors_are_accepted_with_their_script() {
    for (text, network, script_hex) in BIP350_VALID_STANDARD {
        let d = parse_destination(DestinationNetwork::Bitcoin(network), text)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            hex::encode(d.script_pubkey().unwrap().as_bytes()),
            script_hex,
            "{text}"
        );
        assert_eq!(d.canonical_text(), text.to_ascii_lowercase());
        match d {
            Destination::Bitcoin {
                address,
                script_pubkey,
            } => {
                assert_eq!(address.script_pubkey(), script_pubkey);
            }
            other => panic!("{other:?}"),
        }
    }
    // tb1 is valid for signet too (same HRP).
    parse_destination(
        DestinationNetwork::Bitcoin(Network::Signet),
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
    )
    .unwrap();
}

#[test]
fn bip350_valid_but_non_standard_witness_programs_are_refused() {
    // Valid encodings per BIP350, but future witness versions / lengths: anyone can spend.
    for (text, network) in [
        (
            "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
            Network::Bitcoin,
        ),
        ("BC1SW50QGDZ25J", Network::Bitcoin),
        ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", Network::Bitcoin),
    ] {
        let reason = assert_malformed(DestinationNetwork::Bitcoin(network), text);
        assert!(reason.contains("witness version"), "{text}: {reason}");
    }
}

#[test]
fn bip350_invalid_checksum_vectors_are_bad_checksums() {
    for (text, network) in [
        // Bech32 instead of Bech32m (v1+).
        (
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
            Network::Bitcoin,
        ),
        (
            "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
            Network::Testnet,
        ),
        (
            "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
            Network::Bitcoin,
        ),
        // Bech32m instead of Bech32 (v0).
        (
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
            Network::Bitcoin,
        ),
        (
            "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",
            Network::Testnet,
        ),
        // BIP173: one character changed.
        (
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
            Network::Bitcoin,
        ),
    ] {
        assert_bad_checksum(
            DestinationNetwork::Bitcoin(network),
            text,
            ChecksumScheme::Bech32,
        );
    }
}

#[test]
fn bip173_bip350_invalid_vectors_are_refused() {
    for (text, network) in [
        // Invalid human-readable part.
        (
            "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
            Network::Bitcoin,
        ),
        // Invalid character in checksum.
        (
            "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",
            Network::Bitcoin,
        ),
        // Invalid witness version.
        (
            "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",
            Network::Bitcoin,
        ),
        // Invalid program length (1 byte, 41 bytes).
        ("bc1pw5dgrnzv", Network::Bitcoin),
        (
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
            Network::Bitcoin,
        ),
        // Invalid program length for witness version 0 (BIP141).
        ("BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P", Network::Bitcoin),
        // Mixed case.
        (
            "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",
            Network::Testnet,
        ),
        // Zero padding of more than 4 bits; non-zero padding.
        (
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",
            Network::Bitcoin,
        ),
        (
            "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",
            Network::Testnet,
        ),
        // Empty data section.
        ("bc1gmk9yu", Network::Bitcoin),
    ] {
        match parse_destination(DestinationNetwork::Bitcoin(network), text) {
            Err(DestinationError::Malformed { .. } | DestinationError::BadChecksum { .. }) => {}
            other => panic!("{text}: expected Malformed or BadChecksum, got {other:?}"),
        }
    }
}

#[test]
fn segwit_testnet_address_on_mainnet_and_back_is_wrong_network() {
    let tb = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7";
    let found = wrong_network_found(BTC_MAIN, tb);
    assert!(
        found.contains("testnet") && found.contains("signet"),
        "{found}"
    );
    assert!(!found.contains("mainnet"), "{found}");
    // tb1 is not regtest (bcrt1).
    wrong_network_found(BTC_REGTEST, tb);
    let bc = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    assert_eq!(wrong_network_found(BTC_TEST, bc), "bitcoin mainnet");
    let e = parse_destination(BTC_MAIN, tb).unwrap_err().to_string();
    assert!(e.contains("expected bitcoin mainnet"), "{e}");
}

#[test]
fn p2pkh_p2sh_mainnet_testnet_mixups_are_wrong_network() {
    // Well-known mainnet vectors.
    for text in [
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
    ] {
        let d = parse_destination(BTC_MAIN, text).unwrap();
        assert_eq!(d.canonical_text(), text);
        assert_eq!(wrong_network_found(BTC_TEST, text), "bitcoin mainnet");
        assert_eq!(wrong_network_found(BTC_REGTEST, text), "bitcoin mainnet");
    }
    // Testnet/regtest P2PKH (m/n…) and P2SH (2…) built from a hash.
    let p2pkh = Address::p2pkh(PubkeyHash::from_byte_array(HASH), NetworkKind::Test).to_string();
    let p2sh =
        Address::p2sh_from_hash(ScriptHash::from_byte_array(HASH), NetworkKind::Test).to_string();
    assert!(p2pkh.starts_with('m') || p2pkh.starts_with('n'), "{p2pkh}");
    assert!(p2sh.starts_with('2'), "{p2sh}");
    for text in [&p2pkh, &p2sh] {
        parse_destination(BTC_TEST, text).unwrap();
        let d = parse_destination(BTC_REGTEST, text).unwrap();
        assert_eq!(&d.canonical_text(), text);
        let found = wrong_network_found(BTC_MAIN, text);
        assert!(
            found.contains("testnet") && found.contains("regtest"),
            "{found}"
        );
    }
    let d = parse_destination(BTC_TEST, &p2pkh).unwrap();
    assert_eq!(
        hex::encode(d.script_pubkey().unwrap().as_bytes()),
        format!("76a914{}88ac", hex::encode(HASH))
    );
    let d = parse_destination(BTC_TEST, &p2sh).unwrap();
    assert_eq!(
        hex::encode(d.script_pubkey().unwrap().as_bytes()),
        format!("a914{}87", hex::encode(HASH))
    );
}

#[test]
fn base58_checksum_failures_are_bad_checksums() {
    // Last character changed.
    assert_bad_checksum(
        BTC_MAIN,
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3",
        ChecksumScheme::Base58Check,
    );
    assert_bad_checksum(
        BTC_MAIN,
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz",
        ChecksumScheme::Base58Check,
    );
}

#[test]
fn evm_and_dash_addresses_are_wrong_network_for_bitcoin() {
    assert_eq!(wrong_network_found(BTC_MAIN, EIP55_NORMAL[0]), "evm");
    assert_eq!(
        wrong_network_found(BTC_MAIN, &dash_address(76, HASH)),
        "dash mainnet"
    );
    assert_eq!(
        wrong_network_found(BTC_MAIN, &dash_address(16, HASH)),
        "dash mainnet"
    );
    assert_eq!(
        wrong_network_found(BTC_TEST, &dash_address(140, HASH)),
        "dash testnet/regtest"
    );
}

#[test]
fn bitcoin_garbage_is_malformed() {
    for text in [
        "",
        "hello",
        "bc1",
        "1",
        "0OIl", // not in the Base58 alphabet
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2 ",
        "bitcoin:1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "11111111111111111111111111111111111111111111111111111111",
    ] {
        assert_malformed(BTC_MAIN, text);
    }
}

// --------------------------------------------------------------------------- Dash

fn dash_address(version: u8, hash: [u8; 20]) -> String {
    let mut payload = vec![version];
    payload.extend_from_slice(&hash);
    bitcoin::base58::encode_check(&payload)
}

#[test]
fn dash_mainnet_and_testnet_addresses_round_trip() {
    for (version, testnet, kind, first) in [
        (76u8, false, DashAddressKind::P2pkh, &['X'][..]),
        (16, false, DashAddressKind::P2sh, &['7'][..]),
        (140, true, DashAddressKind::P2pkh, &['y'][..]),
        (19, true, DashAddressKind::P2sh, &['8', '9'][..]),
    ] {
        for hash in [HASH, [0u8; 20], [0xff; 20]] {
            let text = dash_address(version, hash);
            assert!(
                first.contains(&text.chars().next().unwrap()),
                "{version}: {text}"
            );
            let d = parse_destination(DestinationNetwork::Dash { testnet }, &text).unwrap();
            assert_eq!(d.canonical_text(), text);
            let script = hex::encode(d.script_pubkey().unwrap().as_bytes());
            match d {
                Destination::Dash(dash) => {
                    assert_eq!(dash.version, version);
                    assert_eq!(dash.kind, kind);
                    assert_eq!(dash.hash, hash);
                    assert_eq!(dash.text, text);
                    // Round trip: decode_check gives back version + hash.
                    let payload = bitcoin::base58::decode_check(&dash.text).unwrap();
                    assert_eq!(payload[0], version);
                    assert_eq!(payload[1..], hash);
                }
                other => panic!("{other:?}"),
            }
            let expected = match kind {
                DashAddressKind::P2pkh => format!("76a914{}88ac", hex::encode(hash)),
                DashAddressKind::P2sh => format!("a914{}87", hex::encode(hash)),
            };
            assert_eq!(script, expected);
        }
    }
}

#[test]
fn dash_mainnet_testnet_mixups_are_wrong_network() {
    for version in [140u8, 19] {
        let text = dash_address(version, HASH);
        assert_eq!(
            wrong_network_found(DASH_MAIN, &text),
            "dash testnet/regtest"
        );
    }
    for version in [76u8, 16] {
        let text = dash_address(version, HASH);
        assert_eq!(wrong_network_found(DASH_TEST, &text), "dash mainnet");
    }
    let e = parse_destination(DASH_MAIN, &dash_address(140, HASH))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected dash mainnet"), "{e}");
}

#[test]
fn bitcoin_and_evm_addresses_are_wrong_network_for_dash() {
    for text in [
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
    ] {
        assert_eq!(wrong_network_found(DASH_MAIN, text), "bitcoin mainnet");
    }
    let found = wrong_network_found(DASH_MAIN, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4");
    assert_eq!(found, "bitcoin mainnet");
    let tp2pkh = Address::p2pkh(PubkeyHash::from_byte_array(HASH), NetworkKind::Test).to_string();
    assert!(wrong_network_found(DASH_TEST, &tp2pkh).starts_with("bitcoin testnet"));
    assert_eq!(wrong_network_found(DASH_MAIN, EIP55_NORMAL[1]), "evm");
}

#[test]
fn dash_garbage_and_bad_checksums() {
    let good = dash_address(76, HASH);
    let mut chars: Vec<char> = good.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
    let corrupted: String = chars.into_iter().collect();
    assert_bad_checksum(DASH_MAIN, &corrupted, ChecksumScheme::Base58Check);

    // Unknown version byte; wrong payload length; not Base58.
    let reason = assert_malformed(DASH_MAIN, &dash_address(77, HASH));
    assert!(reason.contains("version byte 77"), "{reason}");
    let mut short = vec![76u8];
    short.extend_from_slice(&HASH[..19]);
    let reason = assert_malformed(DASH_MAIN, &bitcoin::base58::encode_check(&short));
    assert!(
        reason.contains("20 bytes") || reason.contains("21"),
        "{reason}"
    );
    for text in ["", "X", "XO0Il", "dash:Xabc", "not a dash address"] {
        assert_malformed(DASH_MAIN, text);
    }
}

// -------------------------------------------------------------------------- amount

#[test]
fn amounts_are_parsed_and_checked_against_the_minimum() {
    let min = U256::from(1_000u64);
    assert_eq!(validate_amount("1000", min), Ok(U256::from(1_000u64)));
    assert_eq!(
        validate_amount("123456789", min),
        Ok(U256::from(123_456_789u64))
    );
    assert_eq!(validate_amount("1", U256::ZERO), Ok(U256::from(1u64)));
    let max = U256::MAX.to_string();
    assert_eq!(validate_amount(&max, min), Ok(U256::MAX));
}

#[test]
fn every_amount_error() {
    let min = U256::from(1_000u64);
    let text = |s: &str| s.to_owned();
    assert_eq!(validate_amount("", min), Err(AmountError::Empty));
    assert_eq!(
        validate_amount("-5", min),
        Err(AmountError::Negative { text: text("-5") })
    );
    assert_eq!(
        validate_amount("-0", min),
        Err(AmountError::Negative { text: text("-0") })
    );
    assert_eq!(
        validate_amount("1.5", min),
        Err(AmountError::Fractional { text: text("1.5") })
    );
    assert_eq!(
        validate_amount("1000.0", min),
        Err(AmountError::Fractional {
            text: text("1000.0")
        })
    );
    assert_eq!(
        validate_amount("1,5", min),
        Err(AmountError::Fractional { text: text("1,5") })
    );
    assert_eq!(
        validate_amount("01000", min),
        Err(AmountError::LeadingZero {
            text: text("01000")
        })
    );
    assert_eq!(
        validate_amount("00", min),
        Err(AmountError::LeadingZero { text: text("00") })
    );
    for bad in ["+1000", " 1000", "1000 ", "1e6", "0x10", "abc", "１０００"] {
        match validate_amount(bad, min) {
            Err(AmountError::NotDecimal { text, reason }) => {
                assert_eq!(text, bad);
                assert!(reason.contains("unexpected character"), "{reason}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let too_big = format!("{}0", U256::MAX);
    assert_eq!(
        validate_amount(&too_big, min),
        Err(AmountError::Overflow {
            text: too_big.clone()
        })
    );
    assert_eq!(validate_amount("0", min), Err(AmountError::Zero));
    assert_eq!(validate_amount("0", U256::ZERO), Err(AmountError::Zero));
    assert_eq!(
        validate_amount("999", min),
        Err(AmountError::BelowMinimum {
            amount: U256::from(999u64),
            minimum: min
        })
    );
    // Messages are readable.
    assert_eq!(
        validate_amount("0", min).unwrap_err().to_string(),
        "amount is zero"
    );
    assert_eq!(
        validate_amount("999", min).unwrap_err().to_string(),
        "amount 999 is below the minimum withdrawal 1000"
    );
    assert!(
        validate_amount("-5", min)
            .unwrap_err()
            .to_string()
            .contains("negative")
    );
}
