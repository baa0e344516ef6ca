//! Published test vectors through the public API: BIP39 (Trezor), BIP44 for Ethereum (anvil's
//! default accounts), EIP-55. BIP32 test vector 1 is in `derivation`'s unit tests because it
//! needs a 16-byte seed and the master xprv.

use std::str::FromStr;

use alloy::primitives::Address;
use bitcoin::bip32::{DerivationPath, Xpub};
use coinhub_custody::derivation::{
    self, EVM_ACCOUNT_PATH, MasterKey, evm_deposit_address, parse_eip55, to_eip55,
};
use coinhub_custody::mnemonic::Mnemonic;

const ANVIL_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Proves the Trezor BIP39 vectors for 128-bit and 256-bit zero entropy and 256-bit all-ones
/// entropy: entropy → words, words → entropy, and seed with passphrase "TREZOR".
#[test]
fn bip39_trezor_vectors() {
    let cases: [(&[u8], String, &str); 3] = [
        (
            &[0u8; 16],
            format!("{}about", "abandon ".repeat(11)),
            "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04",
        ),
        (
            &[0u8; 32],
            format!("{}art", "abandon ".repeat(23)),
            "bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8",
        ),
        (
            &[0xffu8; 32],
            format!("{}vote", "zoo ".repeat(23)),
            "dd48c104698c30cfe2b6142103248622fb7bb0ff692eebb00089b32d22484e1613912f0a5b694407be899ffd31ed3992c456cdf60f5d4564b8ba3f05a69890ad",
        ),
    ];
    for (entropy, words, seed_hex) in cases {
        let from_entropy = Mnemonic::from_entropy(entropy).expect("valid entropy");
        assert_eq!(from_entropy.phrase().as_str(), words);
        let parsed = Mnemonic::parse(&words).expect("valid words");
        assert_eq!(parsed.entropy().as_slice(), entropy);
        let seed = parsed.to_seed_with_passphrase("TREZOR");
        assert_eq!(hex::encode(seed.as_bytes()), seed_hex);
    }
}

/// Proves that the empty passphrase is the default and differs from "TREZOR".
#[test]
fn bip39_default_passphrase_is_empty() {
    let mnemonic = Mnemonic::from_entropy(&[0u8; 16]).expect("valid entropy");
    assert_eq!(mnemonic.to_seed(), mnemonic.to_seed_with_passphrase(""));
    assert_ne!(
        mnemonic.to_seed(),
        mnemonic.to_seed_with_passphrase("TREZOR")
    );
}

/// Proves BIP44 Ethereum derivation against anvil's default accounts: `m/44'/60'/0'/0/{0,1}` of
/// the "test … junk" mnemonic are 0xf39F…2266 and 0x7099…79C8, with the well-known private key
/// of account 0, and the EIP-55 strings match.
#[test]
fn bip44_eth_anvil_accounts() {
    let mnemonic = Mnemonic::parse(ANVIL_MNEMONIC).expect("anvil mnemonic");
    let master = MasterKey::from_seed(&mnemonic.to_seed()).expect("master");
    let key_0 = master.evm_private_key(0).expect("index 0");
    let key_1 = master.evm_private_key(1).expect("index 1");
    assert_eq!(
        to_eip55(&key_0.address()),
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
    assert_eq!(
        to_eip55(&key_1.address()),
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    );
    assert_eq!(
        hex::encode(key_0.expose_secret()),
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    );
    assert_eq!(key_0.to_signer().address(), key_0.address());
}

/// Proves that addresses from the account xpub alone equal those from the private keys for
/// the first indexes, and that the xpub is a standard mainnet `xpub…` at depth 3 that
/// round-trips through its string form.
#[test]
fn xpub_derivation_matches_private_derivation() {
    let mnemonic = Mnemonic::parse(ANVIL_MNEMONIC).expect("anvil mnemonic");
    let master = MasterKey::from_seed(&mnemonic.to_seed()).expect("master");
    let account = master.evm_account_xpub().expect("account xpub");
    let text = account.to_string();
    assert!(text.starts_with("xpub"), "{text}");
    assert_eq!(account.depth, 3);
    let account = Xpub::from_str(&text).expect("xpub parses");
    assert_eq!(
        account,
        master
            .xpub_at(&DerivationPath::from_str(EVM_ACCOUNT_PATH).expect("path"))
            .expect("xpub")
    );
    for index in [0, 1, 2, 19, 1_000_000, (1 << 31) - 1] {
        let from_xpub = evm_deposit_address(&account, index).expect("public derivation");
        let from_key = master.evm_private_key(index).expect("private derivation");
        assert_eq!(from_xpub, from_key.address(), "index {index}");
    }
    assert_eq!(
        to_eip55(&evm_deposit_address(&account, 0).expect("index 0")),
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
}

/// Proves the EIP-55 test vectors from the EIP: all-caps, all-lower and mixed-case addresses
/// are produced from the raw bytes and accepted by the strict parser; a one-letter case change
/// is rejected.
#[test]
fn eip55_vectors() {
    let vectors = [
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];
    for vector in vectors {
        let raw = Address::from_str(&vector.to_lowercase()).expect("hex address");
        assert_eq!(to_eip55(&raw), vector);
        assert_eq!(parse_eip55(vector).expect(vector), raw);
    }
    let miscased = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    assert!(matches!(
        parse_eip55(miscased),
        Err(derivation::DerivationError::InvalidEip55 { .. })
    ));
    assert!(parse_eip55("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    assert!(parse_eip55("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA").is_err());
}
