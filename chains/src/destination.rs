//! Withdrawal destination and amount validation: pure functions, no I/O.
//!
//! Before a withdrawal is stored as `requested` (and long before anything is signed) the
//! daemon checks that the destination text is an address *of the chain and network the hot
//! wallet pays on*, and that the amount is a positive whole number of base units at or above
//! the asset's `withdrawal_min`. Everything refused here is refused with an error that names
//! what is wrong, so the `failed` reason the exchange sees is readable.
//!
//! - EVM: `0x` + 40 hex digits. All-lowercase or all-uppercase hex is accepted without a
//!   checksum; mixed case must be a valid EIP-55 checksum (no EIP-1191 chain id). The zero
//!   address is refused (sending there burns the funds).
//! - Bitcoin: bech32 (BIP173, witness v0) or bech32m (BIP350, witness v1+) segwit addresses
//!   and Base58Check P2PKH/P2SH addresses, parsed by the `bitcoin` crate and checked with
//!   [`Address::require_network`](::bitcoin::Address::require_network). Only standard
//!   outputs are accepted (P2PKH, P2SH, P2WPKH, P2WSH, P2TR): future witness versions and
//!   pay-to-anchor are anyone-can-spend today and refused as malformed.
//! - Dash: Base58Check P2PKH/P2SH only. Version bytes: mainnet P2PKH 76 (`X…`), P2SH 16
//!   (`7…`); testnet and regtest P2PKH 140 (`y…`), P2SH 19 (`8…` or `9…`).
//!
//! Amounts are decimal strings of base units (satoshi, duff, wei, token base units); see
//! [`validate_amount`].

use std::fmt;

use ::bitcoin::address::{AddressData, AddressType, NetworkUnchecked, ParseError};
use ::bitcoin::hashes::Hash as _;
use ::bitcoin::{Address as BtcAddress, Network, PubkeyHash, ScriptBuf, ScriptHash};
use alloy::primitives::{Address as EvmAddress, AddressError, U256};

/// Dash mainnet P2PKH version byte (addresses start with `X`).
pub const DASH_MAINNET_P2PKH: u8 = 76;
/// Dash mainnet P2SH version byte (addresses start with `7`).
pub const DASH_MAINNET_P2SH: u8 = 16;
/// Dash testnet/devnet/regtest P2PKH version byte (addresses start with `y`).
pub const DASH_TESTNET_P2PKH: u8 = 140;
/// Dash testnet/devnet/regtest P2SH version byte (addresses start with `8` or `9`).
pub const DASH_TESTNET_P2SH: u8 = 19;

/// The chain and network a destination must belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationNetwork {
    /// Any EVM chain: addresses carry no chain id (EIP-55 without EIP-1191).
    Evm,
    /// Bitcoin on the given network. Testnet, testnet4 and signet share prefixes (and regtest
    /// shares the Base58 ones), so a `tb1…` address is valid for all of them; see
    /// [`Address::is_valid_for_network`](::bitcoin::Address::is_valid_for_network).
    Bitcoin(Network),
    /// Dash mainnet (`testnet: false`) or testnet/devnet/regtest (`testnet: true`).
    Dash {
        /// Testnet version bytes (140/19) instead of mainnet ones (76/16).
        testnet: bool,
    },
}

impl fmt::Display for DestinationNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Evm => f.write_str("evm"),
            Self::Bitcoin(network) => write!(f, "bitcoin {}", bitcoin_network_name(*network)),
            Self::Dash { testnet: false } => f.write_str("dash mainnet"),
            Self::Dash { testnet: true } => f.write_str("dash testnet/regtest"),
        }
    }
}

fn bitcoin_network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "mainnet",
        Network::Testnet => "testnet",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

/// The checksum scheme that failed, for [`DestinationError::BadChecksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumScheme {
    /// EIP-55 mixed-case hex checksum.
    Eip55,
    /// Base58Check (double SHA-256, first 4 bytes).
    Base58Check,
    /// bech32 (BIP173) or bech32m (BIP350) BCH checksum.
    Bech32,
}

impl fmt::Display for ChecksumScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eip55 => "EIP-55",
            Self::Base58Check => "Base58Check",
            Self::Bech32 => "bech32/bech32m (BIP173/BIP350)",
        })
    }
}

/// Why a destination text was refused. Every variant carries the text as received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Not an address of any supported shape (bad length, characters, encoding, witness
    /// version or program).
    #[error("malformed destination {text:?}: {reason}")]
    Malformed {
        /// The destination as received.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed address, but of another chain or network.
    #[error("destination {text:?} is a {found} address, expected {expected}")]
    WrongNetwork {
        /// The destination as received.
        text: String,
        /// The network the withdrawal pays on.
        expected: DestinationNetwork,
        /// The chain/network(s) the address belongs to, e.g. `bitcoin testnet/signet`.
        found: String,
    },
    /// The address's checksum does not verify (a typo or a corrupted address).
    #[error("destination {text:?} fails its {scheme} checksum")]
    BadChecksum {
        /// The destination as received.
        text: String,
        /// Which checksum failed.
        scheme: ChecksumScheme,
    },
    /// The EVM zero address `0x000…0`: funds sent there are burned.
    #[error("destination {text:?} is the zero address; funds sent there are burned")]
    ZeroAddress {
        /// The destination as received.
        text: String,
    },
}

/// Kind of a Dash (legacy, Base58Check) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DashAddressKind {
    /// Pay to public key hash: `OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG`.
    P2pkh,
    /// Pay to script hash (BIP16): `OP_HASH160 <20> OP_EQUAL`.
    P2sh,
}

/// A validated Dash address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashAddress {
    /// Base58Check text (re-encoded from version + hash, so canonical).
    pub text: String,
    /// Version byte: 76/16 on mainnet, 140/19 on testnet/regtest.
    pub version: u8,
    /// P2PKH or P2SH, from the version byte.
    pub kind: DashAddressKind,
    /// The 20-byte HASH160 (public key hash or script hash).
    pub hash: [u8; 20],
    /// The output script paying this address.
    pub script_pubkey: ScriptBuf,
}

/// A validated destination in normalized form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// An EVM account.
    Evm {
        /// The 20-byte address.
        address: EvmAddress,
        /// The EIP-55 checksummed text `0x…`.
        checksummed: String,
    },
    /// A Bitcoin address, network-checked.
    Bitcoin {
        /// The address (its `Display` is canonical: lowercase bech32, Base58Check).
        address: BtcAddress,
        /// The output script paying this address.
        script_pubkey: ScriptBuf,
    },
    /// A Dash address.
    Dash(DashAddress),
}

impl Destination {
    /// The canonical text to store and compare (EIP-55 for EVM, lowercase bech32 or
    /// Base58Check for Bitcoin, Base58Check for Dash).
    pub fn canonical_text(&self) -> String {
        match self {
            Self::Evm { checksummed, .. } => checksummed.clone(),
            Self::Bitcoin { address, .. } => address.to_string(),
            Self::Dash(dash) => dash.text.clone(),
        }
    }

    /// The output script for UTXO chains; `None` for EVM.
    pub fn script_pubkey(&self) -> Option<&ScriptBuf> {
        match self {
            Self::Evm { .. } => None,
            Self::Bitcoin { script_pubkey, .. } => Some(script_pubkey),
            Self::Dash(dash) => Some(&dash.script_pubkey),
        }
    }
}

/// Validates `text` as a destination on `network` and returns its normalized form.
///
/// The text must be exact: no surrounding whitespace, no `ethereum:`/`bitcoin:` URI prefix.
///
/// # Errors
///
/// - [`DestinationError::Malformed`]: empty, whitespace, wrong length or characters, not
///   decodable, unknown version byte, bad witness version/program.
/// - [`DestinationError::WrongNetwork`]: a valid address of another chain or network, e.g.
///   `tb1…` for Bitcoin mainnet, a Bitcoin address for Dash, a Dash `y…` for Dash mainnet,
///   an EVM `0x…` for a UTXO chain.
/// - [`DestinationError::BadChecksum`]: EIP-55 mixed case that does not match, or a failing
///   Base58Check or bech32/bech32m checksum.
/// - [`DestinationError::ZeroAddress`]: the EVM zero address.
pub fn parse_destination(
    network: DestinationNetwork,
    text: &str,
) -> Result<Destination, DestinationError> {
    if text.is_empty() {
        return Err(malformed(text, "empty destination"));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(malformed(text, "contains whitespace"));
    }
    if !text.is_ascii() {
        return Err(malformed(text, "contains non-ASCII characters"));
    }
    match network {
        DestinationNetwork::Evm => parse_evm(text),
        DestinationNetwork::Bitcoin(required) => parse_bitcoin(network, required, text),
        DestinationNetwork::Dash { testnet } => parse_dash(network, testnet, text),
    }
}

fn malformed(text: &str, reason: impl Into<String>) -> DestinationError {
    DestinationError::Malformed {
        text: text.to_owned(),
        reason: reason.into(),
    }
}

fn wrong_network(text: &str, expected: DestinationNetwork, found: String) -> DestinationError {
    DestinationError::WrongNetwork {
        text: text.to_owned(),
        expected,
        found,
    }
}

/// `0x` + 40 hex digits, any case.
fn looks_like_evm(text: &str) -> bool {
    text.len() == 42
        && (text.starts_with("0x") || text.starts_with("0X"))
        && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_evm(text: &str) -> Result<Destination, DestinationError> {
    let Some(hex) = text.strip_prefix("0x") else {
        // Tell the operator when it is in fact an address of a UTXO chain.
        if let Some(found) = other_chain_of_utxo_text(text) {
            return Err(wrong_network(text, DestinationNetwork::Evm, found));
        }
        return Err(malformed(text, "an EVM address starts with 0x"));
    };
    if hex.len() != 40 {
        return Err(malformed(
            text,
            format!(
                "an EVM address has 40 hex digits after 0x, found {}",
                hex.len()
            ),
        ));
    }
    if let Some(bad) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(malformed(text, format!("non-hex character {bad:?}")));
    }
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    let address = if has_lower && has_upper {
        match EvmAddress::parse_checksummed(text, None) {
            Ok(address) => address,
            Err(AddressError::InvalidChecksum) => {
                return Err(DestinationError::BadChecksum {
                    text: text.to_owned(),
                    scheme: ChecksumScheme::Eip55,
                });
            }
            Err(e) => return Err(malformed(text, e.to_string())),
        }
    } else {
        text.parse::<EvmAddress>()
            .map_err(|e| malformed(text, e.to_string()))?
    };
    if address.is_zero() {
        return Err(DestinationError::ZeroAddress {
            text: text.to_owned(),
        });
    }
    Ok(Destination::Evm {
        address,
        checksummed: address.to_checksum(None),
    })
}

/// Which Bitcoin networks an unchecked address is valid for, e.g. `bitcoin testnet/signet`.
fn bitcoin_networks_of(address: &BtcAddress<NetworkUnchecked>) -> String {
    let names: Vec<&str> = [
        Network::Bitcoin,
        Network::Testnet,
        Network::Testnet4,
        Network::Signet,
        Network::Regtest,
    ]
    .into_iter()
    .filter(|n| address.is_valid_for_network(*n))
    .map(bitcoin_network_name)
    .collect();
    format!("bitcoin {}", names.join("/"))
}

/// Names the Dash network of a Base58Check text with a Dash version byte.
fn dash_network_of(text: &str) -> Option<String> {
    let payload = ::bitcoin::base58::decode_check(text).ok()?;
    if payload.len() != 21 {
        return None;
    }
    match payload[0] {
        DASH_MAINNET_P2PKH | DASH_MAINNET_P2SH => Some("dash mainnet".to_owned()),
        DASH_TESTNET_P2PKH | DASH_TESTNET_P2SH => Some("dash testnet/regtest".to_owned()),
        _ => None,
    }
}

/// For a text that is not an EVM address: the UTXO chain/network it belongs to, if any.
fn other_chain_of_utxo_text(text: &str) -> Option<String> {
    if let Ok(address) = text.parse::<BtcAddress<NetworkUnchecked>>() {
        return Some(bitcoin_networks_of(&address));
    }
    dash_network_of(text)
}

fn parse_bitcoin(
    expected: DestinationNetwork,
    required: Network,
    text: &str,
) -> Result<Destination, DestinationError> {
    if looks_like_evm(text) {
        return Err(wrong_network(text, expected, "evm".to_owned()));
    }
    let unchecked = match text.parse::<BtcAddress<NetworkUnchecked>>() {
        Ok(unchecked) => unchecked,
        Err(e) => {
            if let Some(found) = dash_network_of(text) {
                return Err(wrong_network(text, expected, found));
            }
            if let Some(error) = bech32_error(text) {
                return Err(error);
            }
            return Err(bitcoin_parse_error(text, &e));
        }
    };
    if !unchecked.is_valid_for_network(required) {
        return Err(wrong_network(
            text,
            expected,
            bitcoin_networks_of(&unchecked),
        ));
    }
    let address = unchecked
        .require_network(required)
        .map_err(|e| wrong_network(text, expected, e.to_string()))?;
    match address.address_type() {
        Some(
            AddressType::P2pkh
            | AddressType::P2sh
            | AddressType::P2wpkh
            | AddressType::P2wsh
            | AddressType::P2tr,
        ) => {}
        // Future witness versions/lengths (BIP350 keeps them valid to encode) and P2A are
        // spendable by anyone today: paying there loses the funds.
        _ => {
            let detail = match address.to_address_data() {
                AddressData::Segwit { witness_program } => format!(
                    "witness version {} with a {}-byte program",
                    witness_program.version().to_num(),
                    witness_program.program().len()
                ),
                _ => "this address type".to_owned(),
            };
            return Err(malformed(
                text,
                format!(
                    "{detail} is not a standard output (P2PKH, P2SH, P2WPKH, P2WSH, P2TR); \
                     anyone could spend it"
                ),
            ));
        }
    }
    let script_pubkey = address.script_pubkey();
    Ok(Destination::Bitcoin {
        address,
        script_pubkey,
    })
}

fn bitcoin_parse_error(text: &str, error: &ParseError) -> DestinationError {
    use ::bitcoin::base58::Error as B58;
    use ::bitcoin::bech32::primitives::decode::SegwitHrpstringError as Seg;
    match error {
        ParseError::Base58(B58::IncorrectChecksum(_)) => DestinationError::BadChecksum {
            text: text.to_owned(),
            scheme: ChecksumScheme::Base58Check,
        },
        ParseError::Bech32(e) if matches!(e.0, Seg::Checksum(_)) => DestinationError::BadChecksum {
            text: text.to_owned(),
            scheme: ChecksumScheme::Bech32,
        },
        other => malformed(text, error_chain(other)),
    }
}

/// Bech32 human-readable parts of Bitcoin (BIP173): mainnet, testnet/signet, regtest.
fn looks_like_bitcoin_bech32(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["bc1", "tb1", "bcrt1"]
        .iter()
        .any(|hrp| lower.starts_with(hrp))
}

/// The precise error for a `bc1…`/`tb1…`/`bcrt1…` text that failed to parse (the `bitcoin`
/// crate falls back to Base58 and reports that instead); `None` for other texts.
fn bech32_error(text: &str) -> Option<DestinationError> {
    use ::bitcoin::bech32::primitives::decode::SegwitHrpstringError as Seg;
    if !looks_like_bitcoin_bech32(text) {
        return None;
    }
    match ::bitcoin::bech32::segwit::decode(text) {
        Ok(_) => None,
        Err(e) if matches!(e.0, Seg::Checksum(_)) => Some(DestinationError::BadChecksum {
            text: text.to_owned(),
            scheme: ChecksumScheme::Bech32,
        }),
        Err(e) => Some(malformed(text, error_chain(&e))),
    }
}

/// `Display` of an error and its sources, joined with `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn parse_dash(
    expected: DestinationNetwork,
    testnet: bool,
    text: &str,
) -> Result<Destination, DestinationError> {
    if looks_like_evm(text) {
        return Err(wrong_network(text, expected, "evm".to_owned()));
    }
    let payload = match ::bitcoin::base58::decode_check(text) {
        Ok(payload) => payload,
        Err(::bitcoin::base58::Error::IncorrectChecksum(_)) => {
            return Err(DestinationError::BadChecksum {
                text: text.to_owned(),
                scheme: ChecksumScheme::Base58Check,
            });
        }
        Err(e) => {
            // Bech32 Bitcoin addresses are not Base58: name them as Bitcoin.
            if let Ok(address) = text.parse::<BtcAddress<NetworkUnchecked>>() {
                return Err(wrong_network(text, expected, bitcoin_networks_of(&address)));
            }
            return Err(malformed(
                text,
                format!("not Base58Check: {}", error_chain(&e)),
            ));
        }
    };
    let (version, hash) = match payload.as_slice() {
        [version, rest @ ..] if rest.len() == 20 => {
            let mut hash = [0u8; 20];
            hash.copy_from_slice(rest);
            (*version, hash)
        }
        _ => {
            return Err(malformed(
                text,
                format!(
                    "Base58Check payload is {} bytes, expected 21",
                    payload.len()
                ),
            ));
        }
    };
    let (kind, is_testnet) = match version {
        DASH_MAINNET_P2PKH => (DashAddressKind::P2pkh, false),
        DASH_MAINNET_P2SH => (DashAddressKind::P2sh, false),
        DASH_TESTNET_P2PKH => (DashAddressKind::P2pkh, true),
        DASH_TESTNET_P2SH => (DashAddressKind::P2sh, true),
        other => {
            if let Ok(address) = text.parse::<BtcAddress<NetworkUnchecked>>() {
                return Err(wrong_network(text, expected, bitcoin_networks_of(&address)));
            }
            return Err(malformed(
                text,
                format!("unknown Dash version byte {other}"),
            ));
        }
    };
    if is_testnet != testnet {
        let found = if is_testnet {
            "dash testnet/regtest"
        } else {
            "dash mainnet"
        };
        return Err(wrong_network(text, expected, found.to_owned()));
    }
    let script_pubkey = match kind {
        DashAddressKind::P2pkh => ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array(hash)),
        DashAddressKind::P2sh => ScriptBuf::new_p2sh(&ScriptHash::from_byte_array(hash)),
    };
    let mut canonical = Vec::with_capacity(21);
    canonical.push(version);
    canonical.extend_from_slice(&hash);
    Ok(Destination::Dash(DashAddress {
        text: ::bitcoin::base58::encode_check(&canonical),
        version,
        kind,
        hash,
        script_pubkey,
    }))
}

/// Why a withdrawal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// The amount text is empty.
    #[error("amount is empty")]
    Empty,
    /// A leading `-`.
    #[error("amount {text:?} is negative")]
    Negative {
        /// The amount as received.
        text: String,
    },
    /// A decimal point: amounts are whole base units (satoshi, duff, wei).
    #[error("amount {text:?} has a decimal point; amounts are whole base units")]
    Fractional {
        /// The amount as received.
        text: String,
    },
    /// A leading zero (`"007"`), refused so that one amount has one spelling.
    #[error("amount {text:?} has a leading zero")]
    LeadingZero {
        /// The amount as received.
        text: String,
    },
    /// Anything but ASCII decimal digits (`+`, spaces, exponents, hex).
    #[error("amount {text:?} is not a decimal number of base units: {reason}")]
    NotDecimal {
        /// The amount as received.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// More than 2^256 - 1.
    #[error("amount {text:?} does not fit in 256 bits")]
    Overflow {
        /// The amount as received.
        text: String,
    },
    /// Zero.
    #[error("amount is zero")]
    Zero,
    /// Below the asset's `withdrawal_min`.
    #[error("amount {amount} is below the minimum withdrawal {minimum}")]
    BelowMinimum {
        /// The amount requested, base units.
        amount: U256,
        /// The asset's `withdrawal_min`, base units.
        minimum: U256,
    },
}

/// Parses a withdrawal amount in base units and checks it against `withdrawal_min`.
///
/// Shape: `[1-9][0-9]*`, at most 2^256 - 1, and `>= withdrawal_min`.
///
/// # Errors
///
/// [`AmountError::Empty`], [`AmountError::Negative`], [`AmountError::Fractional`],
/// [`AmountError::NotDecimal`], [`AmountError::LeadingZero`], [`AmountError::Overflow`],
/// [`AmountError::Zero`], [`AmountError::BelowMinimum`], checked in that order.
pub fn validate_amount(amount_text: &str, withdrawal_min: U256) -> Result<U256, AmountError> {
    let text = amount_text;
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.starts_with('-') {
        return Err(AmountError::Negative {
            text: text.to_owned(),
        });
    }
    if text.contains(['.', ',']) {
        return Err(AmountError::Fractional {
            text: text.to_owned(),
        });
    }
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_digit()) {
        return Err(AmountError::NotDecimal {
            text: text.to_owned(),
            reason: format!("unexpected character {bad:?}"),
        });
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(AmountError::LeadingZero {
            text: text.to_owned(),
        });
    }
    let amount = U256::from_str_radix(text, 10).map_err(|_| AmountError::Overflow {
        text: text.to_owned(),
    })?;
    if amount.is_zero() {
        return Err(AmountError::Zero);
    }
    if amount < withdrawal_min {
        return Err(AmountError::BelowMinimum {
            amount,
            minimum: withdrawal_min,
        });
    }
    Ok(amount)
}
