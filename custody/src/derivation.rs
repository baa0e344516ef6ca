//! BIP32/BIP44 key derivation for EVM chains, and EIP-55 addresses.
//!
//! - [BIP32](https://github.com/bitcoin/bips/blob/master/bip-0032.mediawiki): hierarchical
//!   deterministic keys over secp256k1 (via `bitcoin::bip32`); extended keys serialize with
//!   mainnet version bytes (`xprv…`/`xpub…`).
//! - [BIP44](https://github.com/bitcoin/bips/blob/master/bip-0044.mediawiki): the EVM account
//!   is `m/44'/60'/0'` (coin type 60, [SLIP-44](https://github.com/satoshilabs/slips/blob/master/slip-0044.md));
//!   address `i` is the non-hardened child `0/i` of the account, so deposit addresses can be
//!   handed out from the account xpub without any secret. Two more non-hardened branches
//!   serve the EVM Safe hot wallet: `1/0` is each key's Safe owner ([`SAFE_OWNER_BRANCH`]),
//!   `2/0` of key A the executor that submits Safe transactions ([`EXECUTOR_BRANCH`]).
//! - EVM address: the last 20 bytes of `keccak256` of the 64-byte uncompressed public key
//!   (without the `0x04` prefix), shown checksummed per
//!   [EIP-55](https://eips.ethereum.org/EIPS/eip-55).

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, keccak256};
use alloy::signers::local::PrivateKeySigner;
use bitcoin::NetworkKind;
use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Xpriv, Xpub};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use zeroize::Zeroizing;

use crate::mnemonic::Seed;

/// BIP44 path of the EVM account whose xpub is configured for deposit addresses.
pub const EVM_ACCOUNT_PATH: &str = "m/44'/60'/0'";

/// Depth of a BIP44 account key (`m / purpose' / coin_type' / account'`).
pub const ACCOUNT_DEPTH: u8 = 3;

/// BIP44 "change" branch used for deposit (receive) addresses.
const EXTERNAL_CHAIN: u32 = 0;

/// Branch of a key's EVM account (`m/44'/60'/0'/1/*`) that holds its Safe owner: each of the
/// keys A, B and C owns the 2-of-3 Safe hot wallet with the address at `account/1/0`
/// ([`evm_address_at`]`(xpub, SAFE_OWNER_BRANCH, 0)`). It is non-hardened, so the owner of
/// key C (offline) is known from its EVM account xpub alone. Kept apart from the deposit
/// branch `0`, whose keys sign ordinary transfers.
pub const SAFE_OWNER_BRANCH: u32 = 1;

/// Branch of key A's EVM account (`m/44'/60'/0'/2/*`) that holds the executor: the EOA at
/// `account/2/0` submits `execTransaction` to the Safe and pays its gas. It owns nothing of
/// the Safe (its signatures do not count towards the threshold), so a leak of this key costs
/// at most its gas balance.
pub const EXECUTOR_BRANCH: u32 = 2;

/// Why a key or address could not be derived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DerivationError {
    /// BIP32 rejected the seed or a derivation step (invalid key, depth overflow). These are
    /// astronomically unlikely for real seeds.
    #[error("bip32 derivation failed: {0}")]
    Bip32(bitcoin::bip32::Error),
    /// The address index is 2^31 or more, i.e. a hardened index, which cannot be derived from
    /// an xpub.
    #[error("address index {index} is out of range: must be below 2^31 (non-hardened)")]
    IndexOutOfRange {
        /// The rejected index.
        index: u32,
    },
    /// The xpub is not a BIP44 account key (depth 3), so `0/index` below it would not be a
    /// BIP44 address.
    #[error("xpub at depth {depth} is not a bip44 account xpub (depth 3)")]
    NotAnAccountXpub {
        /// Depth of the xpub that was given.
        depth: u8,
    },
    /// The text is not a `0x`-prefixed, 40-hex-digit address with a correct EIP-55 checksum.
    #[error("not an eip-55 checksummed address: {text}")]
    InvalidEip55 {
        /// The rejected text (an address is public).
        text: String,
    },
}

impl From<bitcoin::bip32::Error> for DerivationError {
    fn from(error: bitcoin::bip32::Error) -> Self {
        Self::Bip32(error)
    }
}

/// An extended private key whose secret scalar and chain code are erased on drop.
struct XprivGuard(Xpriv);

impl Drop for XprivGuard {
    fn drop(&mut self) {
        // `Xpriv` is `Copy`: copies made inside `bitcoin::bip32` cannot be reached from here;
        // this erases the ones this crate owns.
        self.0.private_key.non_secure_erase();
        self.0.chain_code = ChainCode::from([0u8; 32]);
    }
}

/// A BIP32 master key (`m`) derived from a BIP39 seed, with mainnet version bytes. Erased on
/// drop; `Debug` is redacted; it is never serialized.
pub struct MasterKey(XprivGuard);

impl MasterKey {
    /// Derives the BIP32 master key from a 64-byte BIP39 seed (`HMAC-SHA512("Bitcoin seed",
    /// seed)`).
    ///
    /// # Errors
    /// [`DerivationError::Bip32`] if the left half of the HMAC is not a valid secp256k1 scalar
    /// (probability below 2^-127).
    pub fn from_seed(seed: &Seed) -> Result<Self, DerivationError> {
        let xpriv = Xpriv::new_master(NetworkKind::Main, seed.as_bytes())?;
        Ok(Self(XprivGuard(xpriv)))
    }

    /// The xpub at `path` (hardened and normal steps allowed), e.g. `m/0'` in BIP32 vectors.
    ///
    /// # Errors
    /// [`DerivationError::Bip32`] if a derivation step fails.
    pub fn xpub_at(&self, path: &DerivationPath) -> Result<Xpub, DerivationError> {
        let secp = Secp256k1::signing_only();
        let child = XprivGuard(self.0.0.derive_priv(&secp, path)?);
        Ok(Xpub::from_priv(&secp, &child.0))
    }

    /// The EVM account xpub at [`EVM_ACCOUNT_PATH`] (`m/44'/60'/0'`), serialized by `Display`
    /// as `xpub…` (mainnet). This is the only key material `coinhubd` needs to hand out deposit
    /// addresses (see [`evm_deposit_address`]).
    ///
    /// # Errors
    /// [`DerivationError::Bip32`] if a derivation step fails.
    pub fn evm_account_xpub(&self) -> Result<Xpub, DerivationError> {
        let xpub = self.xpub_at(&evm_account_path())?;
        assert_eq!(xpub.depth, ACCOUNT_DEPTH);
        Ok(xpub)
    }

    /// The private key of EVM address `index`, at `m/44'/60'/0'/0/index`, for signing
    /// (deposit branch; same as [`MasterKey::evm_key_at`]`(0, index)`).
    ///
    /// # Errors
    /// [`DerivationError::IndexOutOfRange`] if `index >= 2^31`; [`DerivationError::Bip32`] if
    /// a derivation step fails.
    pub fn evm_private_key(&self, index: u32) -> Result<EvmPrivateKey, DerivationError> {
        self.evm_key_at(EXTERNAL_CHAIN, index)
    }

    /// The private key at `m/44'/60'/0'/branch/index`, e.g. the Safe owner key
    /// ([`SAFE_OWNER_BRANCH`], index 0) or the executor key ([`EXECUTOR_BRANCH`], index 0).
    ///
    /// # Errors
    /// [`DerivationError::IndexOutOfRange`] (naming the offending number) if `branch` or
    /// `index` is `2^31` or more; [`DerivationError::Bip32`] if a derivation step fails.
    pub fn evm_key_at(&self, branch: u32, index: u32) -> Result<EvmPrivateKey, DerivationError> {
        let path = evm_account_path().extend([normal_child(branch)?, normal_child(index)?]);
        let secp = Secp256k1::new();
        let child = XprivGuard(self.0.0.derive_priv(&secp, &path)?);
        let address = evm_address(&child.0.private_key.public_key(&secp));
        let secret = Zeroizing::new(child.0.private_key.secret_bytes());
        Ok(EvmPrivateKey { secret, address })
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// A secp256k1 private key of an EVM address, zeroized on drop; `Debug` shows only the
/// address.
pub struct EvmPrivateKey {
    secret: Zeroizing<[u8; 32]>,
    address: Address,
}

impl EvmPrivateKey {
    /// The address this key controls.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The 32-byte big-endian secret scalar. Do not copy it into memory that is not zeroized.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// An alloy signer for this key (its `k256` key is zeroized when the signer drops).
    pub fn to_signer(&self) -> PrivateKeySigner {
        let signer = PrivateKeySigner::from_slice(self.secret.as_slice())
            .expect("a bip32 private key is a valid non-zero secp256k1 scalar");
        assert_eq!(signer.address(), self.address);
        signer
    }
}

impl fmt::Debug for EvmPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmPrivateKey")
            .field("address", &self.address)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The EVM deposit address `index` of a BIP44 account: derives the non-hardened child
/// `0/index` of `account_xpub` (the xpub of `m/44'/60'/0'`) — no secret needed.
///
/// # Errors
/// [`DerivationError::NotAnAccountXpub`] if the xpub's depth is not 3;
/// [`DerivationError::IndexOutOfRange`] if `index >= 2^31`; [`DerivationError::Bip32`] if a
/// derivation step fails.
pub fn evm_deposit_address(account_xpub: &Xpub, index: u32) -> Result<Address, DerivationError> {
    evm_address_at(account_xpub, EXTERNAL_CHAIN, index)
}

/// The EVM address at the non-hardened child `branch/index` of a BIP44 account xpub (the
/// xpub of `m/44'/60'/0'`), e.g. a key's Safe owner at `(`[`SAFE_OWNER_BRANCH`]`, 0)` — no
/// secret needed.
///
/// # Errors
/// [`DerivationError::NotAnAccountXpub`] if the xpub's depth is not 3;
/// [`DerivationError::IndexOutOfRange`] (naming the offending number) if `branch` or `index`
/// is `2^31` or more; [`DerivationError::Bip32`] if a derivation step fails.
pub fn evm_address_at(
    account_xpub: &Xpub,
    branch: u32,
    index: u32,
) -> Result<Address, DerivationError> {
    if account_xpub.depth != ACCOUNT_DEPTH {
        return Err(DerivationError::NotAnAccountXpub {
            depth: account_xpub.depth,
        });
    }
    let path = [normal_child(branch)?, normal_child(index)?];
    let secp = Secp256k1::verification_only();
    let child = account_xpub.derive_pub(&secp, &path)?;
    Ok(evm_address(&child.public_key))
}

/// The EVM address of a secp256k1 public key: the last 20 bytes of `keccak256` of the 64-byte
/// uncompressed key (x ‖ y, without the `0x04` prefix).
pub fn evm_address(public_key: &PublicKey) -> Address {
    let uncompressed = public_key.serialize_uncompressed();
    assert_eq!(uncompressed[0], 0x04, "sec1 uncompressed prefix");
    let hash = keccak256(&uncompressed[1..]);
    Address::from_slice(&hash[12..])
}

/// The EIP-55 mixed-case checksummed form of `address`, `0x`-prefixed (42 characters). This is
/// how Coinhub shows and stores EVM addresses.
pub fn to_eip55(address: &Address) -> String {
    address.to_checksum(None)
}

/// Parses a `0x`-prefixed address whose letter case matches its EIP-55 checksum exactly, so a
/// mistyped address is caught. Text in the wrong case (e.g. an all-lowercase copy of a
/// mixed-case address) is rejected.
///
/// # Errors
/// [`DerivationError::InvalidEip55`] for bad length, non-hex digits or a wrong checksum.
pub fn parse_eip55(text: &str) -> Result<Address, DerivationError> {
    let invalid = || DerivationError::InvalidEip55 {
        text: text.to_owned(),
    };
    if !text.starts_with("0x") {
        return Err(invalid());
    }
    let address = Address::from_str(text).map_err(|_| invalid())?;
    if to_eip55(&address) != text {
        return Err(invalid());
    }
    Ok(address)
}

/// `m/44'/60'/0'` as a path.
fn evm_account_path() -> DerivationPath {
    DerivationPath::from_str(EVM_ACCOUNT_PATH).expect("EVM_ACCOUNT_PATH is a valid bip32 path")
}

/// A non-hardened child number, or `IndexOutOfRange`.
fn normal_child(index: u32) -> Result<ChildNumber, DerivationError> {
    ChildNumber::from_normal_idx(index).map_err(|_| DerivationError::IndexOutOfRange { index })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BIP32 test vector 1 seed (16 bytes); `Seed` holds 64, so the master key is built
    /// directly here.
    fn vector1_master() -> MasterKey {
        let seed = hex::decode("000102030405060708090a0b0c0d0e0f").expect("hex");
        let xpriv = Xpriv::new_master(NetworkKind::Main, &seed).expect("valid seed");
        MasterKey(XprivGuard(xpriv))
    }

    /// Proves BIP32 test vector 1: `m` and `m/0H` (xprv and xpub) and `m/0H/1` match the
    /// published serializations. Steps: master from seed, derive, compare strings.
    #[test]
    fn bip32_test_vector_1() {
        let master = vector1_master();
        assert_eq!(
            master.0.0.to_string(),
            "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi"
        );
        let m = master.xpub_at(&DerivationPath::master()).expect("m");
        assert_eq!(
            m.to_string(),
            "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8"
        );
        let path_0h = DerivationPath::from_str("m/0'").expect("path");
        let secp = Secp256k1::new();
        let xprv_0h = master.0.0.derive_priv(&secp, &path_0h).expect("m/0H");
        assert_eq!(
            xprv_0h.to_string(),
            "xprv9uHRZZhk6KAJC1avXpDAp4MDc3sQKNxDiPvvkX8Br5ngLNv1TxvUxt4cV1rGL5hj6KCesnDYUhd7oWgT11eZG7XnxHrnYeSvkzY7d2bhkJ7"
        );
        assert_eq!(
            master.xpub_at(&path_0h).expect("m/0H").to_string(),
            "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw"
        );
        let path_0h_1 = DerivationPath::from_str("m/0'/1").expect("path");
        assert_eq!(
            master.xpub_at(&path_0h_1).expect("m/0H/1").to_string(),
            "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ"
        );
    }

    /// Proves the BIP39 → BIP32 link with the Trezor vector: 24 × zero entropy, passphrase
    /// "TREZOR", gives the published master xprv.
    #[test]
    fn trezor_vector_master_xprv() {
        let mnemonic = crate::mnemonic::Mnemonic::from_entropy(&[0u8; 32]).expect("entropy");
        let master =
            MasterKey::from_seed(&mnemonic.to_seed_with_passphrase("TREZOR")).expect("master");
        assert_eq!(
            master.0.0.to_string(),
            "xprv9s21ZrQH143K32qBagUJAMU2LsHg3ka7jqMcV98Y7gVeVyNStwYS3U7yVVoDZ4btbRNf4h6ibWpY22iRmXq35qgLs79f312g2kj5539ebPM"
        );
    }

    /// Proves that hardened indexes and non-account xpubs are refused for deposit addresses.
    #[test]
    fn deposit_address_rejects_bad_input() {
        let master = vector1_master();
        let account = master.evm_account_xpub().expect("account");
        let err = evm_deposit_address(&account, 1 << 31).expect_err("hardened");
        assert!(matches!(err, DerivationError::IndexOutOfRange { index } if index == 1 << 31));
        let root = master.xpub_at(&DerivationPath::master()).expect("m");
        let err = evm_deposit_address(&root, 0).expect_err("depth 0");
        assert!(matches!(
            err,
            DerivationError::NotAnAccountXpub { depth: 0 }
        ));
        assert!(matches!(
            master.evm_private_key(u32::MAX),
            Err(DerivationError::IndexOutOfRange { .. })
        ));
    }

    /// Proves that the key at `branch/index` and the address derived from the account xpub
    /// alone agree on every branch (so key C's Safe owner is known from its xpub), that the
    /// deposit key is branch 0, and that the branches give distinct addresses. Steps: derive
    /// keys and addresses on branches 0, 1 and 2, compare; a hardened branch is refused.
    #[test]
    fn branch_keys_match_xpub_addresses() {
        let master = vector1_master();
        let account = master.evm_account_xpub().expect("account");
        let mut seen = Vec::new();
        for branch in [EXTERNAL_CHAIN, SAFE_OWNER_BRANCH, EXECUTOR_BRANCH] {
            let key = master.evm_key_at(branch, 0).expect("key");
            let address = evm_address_at(&account, branch, 0).expect("address");
            assert_eq!(key.address(), address);
            assert_eq!(key.to_signer().address(), address);
            seen.push(address);
        }
        assert_eq!(
            master.evm_private_key(0).expect("key").address(),
            evm_deposit_address(&account, 0).expect("address")
        );
        assert_eq!(seen[0], evm_deposit_address(&account, 0).expect("address"));
        assert!(seen[0] != seen[1] && seen[1] != seen[2] && seen[0] != seen[2]);
        assert!(matches!(
            evm_address_at(&account, 1 << 31, 0),
            Err(DerivationError::IndexOutOfRange { index }) if index == 1 << 31
        ));
        assert!(matches!(
            master.evm_key_at(1 << 31, 0),
            Err(DerivationError::IndexOutOfRange { .. })
        ));
    }

    /// Proves that `Debug` of secret key types shows no key bytes.
    #[test]
    fn debug_is_redacted() {
        let master = vector1_master();
        let key = master.evm_private_key(0).expect("key");
        let text = format!("{master:?} {key:?}");
        assert!(!text.contains(&hex::encode(key.expose_secret())), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}
