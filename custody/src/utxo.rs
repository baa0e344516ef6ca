//! 2-of-3 multisig wallets for UTXO chains (Bitcoin, Dash) as output script descriptors.
//!
//! - [BIP48](https://github.com/bitcoin/bips/blob/master/bip-0048.mediawiki): each of the
//!   three keys A, B, C contributes one account key at `m/48'/coin_type'/0'/script_type'`
//!   (coin type per [SLIP-44](https://github.com/satoshilabs/slips/blob/master/slip-0044.md):
//!   0 Bitcoin, 5 Dash, 1 every test network; script type `1'` P2SH-P2WSH, `2'` P2WSH).
//!   Legacy P2SH has no BIP48 script type; Coinhub uses the `2'` account for it, as the Bitcoin
//!   Core vectors in `shared/fixtures/bitcoin-core/descriptors_*.json` do (they build `wsh`,
//!   `sh` and `sh(wsh)` over the same `m/48'/coin'/0'/2'` keys).
//! - [BIP380](https://github.com/bitcoin/bips/blob/master/bip-0380.mediawiki)–
//!   [BIP383](https://github.com/bitcoin/bips/blob/master/bip-0383.mediawiki): the wallet is
//!   `wsh(sortedmulti(2,A/0/*,B/0/*,C/0/*))` (receive) and the same with `/1/*` (change), or
//!   `sh(…)` / `sh(wsh(…))`, each key written with its origin `[fingerprint/48h/…]`. Descriptors
//!   are built and derived with the `miniscript` crate and printed exactly as Bitcoin Core's
//!   `getdescriptorinfo` prints them: hardened steps as `h`, followed by `#` and the 8-character
//!   BIP380 checksum.
//! - Addresses: Bitcoin ones come from `miniscript` (bech32 for `wsh`, Base58Check P2SH for
//!   `sh`); Dash has no segwit, so its wallets are `sh(sortedmulti(…))` only, and the P2SH
//!   script hash is Base58Check-encoded with Dash's version bytes ([`DASH_MAINNET_P2SH_VERSION`],
//!   [`DASH_TESTNET_P2SH_VERSION`]).
//!
//! Everything here is public key material: deposit addresses are derived from the three account
//! xpubs alone.

use std::fmt;
use std::str::FromStr;

use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::{NetworkKind, Script, ScriptBuf};
use miniscript::descriptor::{DescriptorXKey, Wildcard};
use miniscript::{DefiniteDescriptorKey, Descriptor, DescriptorPublicKey};

use crate::derivation::{DerivationError, MasterKey};

/// BIP48 purpose (`48'`), the first step of every multisig account path.
pub const BIP48_PURPOSE: u32 = 48;

/// Depth of a BIP48 account key (`m / 48' / coin_type' / account' / script_type'`).
pub const BIP48_ACCOUNT_DEPTH: u8 = 4;

/// The BIP48 account index Coinhub uses (`0'`).
pub const BIP48_ACCOUNT: u32 = 0;

/// Signatures needed to spend from a wallet.
pub const MULTISIG_THRESHOLD: usize = 2;

/// Keys in a wallet (A hot, B cosigner, C backup).
pub const MULTISIG_KEY_COUNT: usize = 3;

/// Dash mainnet Base58Check version byte of P2PKH addresses (`X…`).
pub const DASH_MAINNET_P2PKH_VERSION: u8 = 76;

/// Dash mainnet Base58Check version byte of P2SH addresses (`7…`).
pub const DASH_MAINNET_P2SH_VERSION: u8 = 16;

/// Dash testnet and regtest Base58Check version byte of P2PKH addresses (`y…`).
pub const DASH_TESTNET_P2PKH_VERSION: u8 = 140;

/// Dash testnet and regtest Base58Check version byte of P2SH addresses (`8…` or `9…`).
pub const DASH_TESTNET_P2SH_VERSION: u8 = 19;

/// Why a UTXO wallet, descriptor or address could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UtxoError {
    /// Deriving an account key from a master key failed.
    #[error(transparent)]
    Derivation(#[from] DerivationError),
    /// The address index is 2^31 or more (hardened), which cannot be derived from xpubs.
    #[error("address index {index} is out of range: must be below 2^31 (non-hardened)")]
    IndexOutOfRange {
        /// The rejected index.
        index: u32,
    },
    /// The text is not a key expression `[fingerprint/path]xpub` with an origin and no
    /// derivation steps or wildcard after the xpub.
    #[error("not an account key expression [fingerprint/path]xpub: {text}")]
    InvalidAccountXpub {
        /// The rejected text (key expressions are public).
        text: String,
    },
    /// The key's origin path is not a BIP48 account path (`48'/coin_type'/account'/script'`,
    /// all hardened), or the xpub's depth differs from the path's length.
    #[error("key {key} is not a bip48 account key: origin path {path}, xpub depth {depth}")]
    NotAnAccountKey {
        /// Position of the key: 0 = A, 1 = B, 2 = C (or 0 when parsed alone).
        key: usize,
        /// The origin path, as `m/48'/…`.
        path: String,
        /// The depth recorded in the xpub.
        depth: u8,
    },
    /// The key is for another network: its version bytes (`xpub` vs. `tpub`) or its BIP48
    /// coin type do not match the wallet's network.
    #[error(
        "key {key} does not belong to {network}: coin type {coin_type}, {found:?} version bytes"
    )]
    KeyNetworkMismatch {
        /// Position of the key: 0 = A, 1 = B, 2 = C.
        key: usize,
        /// The wallet's network.
        network: UtxoNetwork,
        /// The coin type in the key's origin path (without the hardened bit).
        coin_type: u32,
        /// The network kind of the key's version bytes.
        found: NetworkKind,
    },
    /// Two of the three keys are the same public key, so the wallet would not be 2-of-3.
    #[error("keys {first} and {second} are the same public key")]
    DuplicateKey {
        /// Position of the first of the two keys (0 = A, 1 = B, 2 = C).
        first: usize,
        /// Position of the second.
        second: usize,
    },
    /// The network cannot use the script type (Dash has no segwit: only `sh` is allowed).
    #[error("{network} does not support {script} multisig")]
    ScriptNotSupported {
        /// The wallet's network.
        network: UtxoNetwork,
        /// The refused script type.
        script: MultisigScript,
    },
    /// The text is not a network name known to [`UtxoNetwork`].
    #[error("unknown utxo network: {text}")]
    UnknownNetwork {
        /// The rejected text.
        text: String,
    },
    /// `miniscript` rejected the descriptor or could not derive from it. Does not happen for
    /// the validated keys of a [`UtxoWallet`].
    #[error("descriptor error: {0}")]
    Descriptor(String),
}

/// A UTXO chain and network: which address encoding, xpub version bytes and SLIP-44 coin type
/// a wallet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UtxoNetwork {
    /// Bitcoin mainnet (`bc1…`, `3…`; `xpub`; coin type 0).
    Bitcoin,
    /// Bitcoin testnet3 (`tb1…`, `2…`; `tpub`; coin type 1).
    BitcoinTestnet,
    /// Bitcoin testnet4 (`tb1…`, `2…`; `tpub`; coin type 1).
    BitcoinTestnet4,
    /// Bitcoin signet (`tb1…`, `2…`; `tpub`; coin type 1).
    BitcoinSignet,
    /// Bitcoin regtest (`bcrt1…`, `2…`; `tpub`; coin type 1).
    BitcoinRegtest,
    /// Dash mainnet (P2SH `7…`; `xpub`; coin type 5).
    Dash,
    /// Dash testnet (P2SH `8…`/`9…`; `tpub`; coin type 1).
    DashTestnet,
    /// Dash regtest (P2SH `8…`/`9…`; `tpub`; coin type 1).
    DashRegtest,
}

impl UtxoNetwork {
    /// Every network, for iteration in tests and configuration help.
    pub const ALL: [UtxoNetwork; 8] = [
        Self::Bitcoin,
        Self::BitcoinTestnet,
        Self::BitcoinTestnet4,
        Self::BitcoinSignet,
        Self::BitcoinRegtest,
        Self::Dash,
        Self::DashTestnet,
        Self::DashRegtest,
    ];

    /// The SLIP-44 coin type of BIP48 account paths: 0 for Bitcoin mainnet, 5 for Dash
    /// mainnet, 1 for every test network (without the hardened bit).
    pub fn coin_type(self) -> u32 {
        match self {
            Self::Bitcoin => 0,
            Self::Dash => 5,
            Self::BitcoinTestnet
            | Self::BitcoinTestnet4
            | Self::BitcoinSignet
            | Self::BitcoinRegtest
            | Self::DashTestnet
            | Self::DashRegtest => 1,
        }
    }

    /// Version bytes of extended keys: `Main` (`xpub`) on mainnets, `Test` (`tpub`) otherwise.
    /// Dash Core uses the same BIP32 version bytes as Bitcoin.
    pub fn network_kind(self) -> NetworkKind {
        match self {
            Self::Bitcoin | Self::Dash => NetworkKind::Main,
            _ => NetworkKind::Test,
        }
    }

    /// The `bitcoin` crate's network for Bitcoin networks, `None` for Dash.
    pub fn bitcoin_network(self) -> Option<bitcoin::Network> {
        match self {
            Self::Bitcoin => Some(bitcoin::Network::Bitcoin),
            Self::BitcoinTestnet => Some(bitcoin::Network::Testnet),
            Self::BitcoinTestnet4 => Some(bitcoin::Network::Testnet4),
            Self::BitcoinSignet => Some(bitcoin::Network::Signet),
            Self::BitcoinRegtest => Some(bitcoin::Network::Regtest),
            Self::Dash | Self::DashTestnet | Self::DashRegtest => None,
        }
    }

    /// Whether this is a Dash network (no segwit; Dash address version bytes).
    pub fn is_dash(self) -> bool {
        matches!(self, Self::Dash | Self::DashTestnet | Self::DashRegtest)
    }

    /// Dash's Base58Check version bytes `(p2pkh, p2sh)`: `(76, 16)` on mainnet, `(140, 19)` on
    /// testnet and regtest; `None` for Bitcoin networks.
    pub fn dash_address_versions(self) -> Option<(u8, u8)> {
        match self {
            Self::Dash => Some((DASH_MAINNET_P2PKH_VERSION, DASH_MAINNET_P2SH_VERSION)),
            Self::DashTestnet | Self::DashRegtest => {
                Some((DASH_TESTNET_P2PKH_VERSION, DASH_TESTNET_P2SH_VERSION))
            }
            _ => None,
        }
    }

    /// The configuration name: `bitcoin`, `bitcoin-testnet`, `bitcoin-testnet4`,
    /// `bitcoin-signet`, `bitcoin-regtest`, `dash`, `dash-testnet`, `dash-regtest`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bitcoin => "bitcoin",
            Self::BitcoinTestnet => "bitcoin-testnet",
            Self::BitcoinTestnet4 => "bitcoin-testnet4",
            Self::BitcoinSignet => "bitcoin-signet",
            Self::BitcoinRegtest => "bitcoin-regtest",
            Self::Dash => "dash",
            Self::DashTestnet => "dash-testnet",
            Self::DashRegtest => "dash-regtest",
        }
    }
}

impl fmt::Display for UtxoNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for UtxoNetwork {
    type Err = UtxoError;

    /// Parses a name printed by [`UtxoNetwork::name`].
    ///
    /// # Errors
    /// [`UtxoError::UnknownNetwork`] for any other text.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|network| network.name() == text)
            .ok_or_else(|| UtxoError::UnknownNetwork {
                text: text.to_owned(),
            })
    }
}

/// The BIP48 script type, the last step of an account path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bip48ScriptType {
    /// `1'`: P2SH-wrapped P2WSH.
    P2shP2wsh,
    /// `2'`: native P2WSH (also used by Coinhub for legacy P2SH, as the fixtures do).
    P2wsh,
}

impl Bip48ScriptType {
    /// The path step without the hardened bit: 1 or 2.
    pub fn index(self) -> u32 {
        match self {
            Self::P2shP2wsh => 1,
            Self::P2wsh => 2,
        }
    }
}

/// How the 2-of-3 `sortedmulti` script is wrapped into an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MultisigScript {
    /// `wsh(sortedmulti(…))`: native segwit P2WSH (BIP141), Bitcoin's deposit addresses.
    Wsh,
    /// `sh(wsh(sortedmulti(…)))`: P2WSH nested in P2SH.
    ShWsh,
    /// `sh(sortedmulti(…))`: legacy P2SH (BIP16), Dash's deposit addresses.
    Sh,
}

impl MultisigScript {
    /// The BIP48 script type of the account keys for this script: `2'` for `wsh`, `1'` for
    /// `sh(wsh)`, and `2'` for legacy `sh` (BIP48 defines none; the fixtures use `2'`).
    pub fn bip48_script_type(self) -> Bip48ScriptType {
        match self {
            Self::Wsh | Self::Sh => Bip48ScriptType::P2wsh,
            Self::ShWsh => Bip48ScriptType::P2shP2wsh,
        }
    }

    /// Whether the script uses segwit (and so cannot be used on Dash).
    pub fn is_segwit(self) -> bool {
        matches!(self, Self::Wsh | Self::ShWsh)
    }
}

impl fmt::Display for MultisigScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Wsh => "wsh",
            Self::ShWsh => "sh(wsh)",
            Self::Sh => "sh",
        })
    }
}

/// The BIP44-style branch below each account key: receive (deposit) addresses on `0/*`,
/// change on `1/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    /// `/0/*`: addresses handed out for deposits.
    Receive,
    /// `/1/*`: change outputs of the wallet's own spends.
    Change,
}

impl Branch {
    /// The path step: 0 or 1.
    pub fn index(self) -> u32 {
        match self {
            Self::Receive => 0,
            Self::Change => 1,
        }
    }
}

/// A BIP48 account xpub with its key origin: the master key fingerprint and the path from the
/// master key, as written in a descriptor, `[73c5da0a/48h/0h/0h/2h]xpub6Dk…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountXpub {
    master_fingerprint: Fingerprint,
    path: DerivationPath,
    xpub: Xpub,
}

impl AccountXpub {
    /// Wraps an account xpub and its origin after checking that `path` is a BIP48 account path
    /// (`m/48'/coin_type'/account'/script_type'`, all hardened) and that the xpub's depth is 4.
    /// The coin type and version bytes are checked against a network by [`UtxoWallet::new`].
    ///
    /// # Errors
    /// [`UtxoError::NotAnAccountKey`] otherwise (reported as key 0).
    pub fn new(
        master_fingerprint: Fingerprint,
        path: DerivationPath,
        xpub: Xpub,
    ) -> Result<Self, UtxoError> {
        let steps = path.as_ref();
        let is_bip48 = steps.len() == usize::from(BIP48_ACCOUNT_DEPTH)
            && steps.iter().all(ChildNumber::is_hardened)
            && steps[0]
                == ChildNumber::Hardened {
                    index: BIP48_PURPOSE,
                };
        if !is_bip48 || xpub.depth != BIP48_ACCOUNT_DEPTH {
            return Err(UtxoError::NotAnAccountKey {
                key: 0,
                path: path.to_string(),
                depth: xpub.depth,
            });
        }
        Ok(Self {
            master_fingerprint,
            path,
            xpub,
        })
    }

    /// Fingerprint of the master key the account was derived from (first 4 bytes of
    /// HASH160 of its public key).
    pub fn master_fingerprint(&self) -> Fingerprint {
        self.master_fingerprint
    }

    /// The account path from the master key, `m/48'/coin_type'/account'/script_type'`.
    pub fn path(&self) -> &DerivationPath {
        &self.path
    }

    /// The account xpub (`xpub…` or `tpub…`).
    pub fn xpub(&self) -> &Xpub {
        &self.xpub
    }

    /// The SLIP-44 coin type in the path (without the hardened bit).
    pub fn coin_type(&self) -> u32 {
        let step = self.path.as_ref()[1];
        assert!(step.is_hardened(), "checked by AccountXpub::new");
        match step {
            ChildNumber::Hardened { index } | ChildNumber::Normal { index } => index,
        }
    }

    /// The descriptor key expression for `branch`: `[fingerprint/path]xpub/branch/*`.
    fn descriptor_key(&self, branch: Branch) -> DescriptorPublicKey {
        DescriptorPublicKey::XPub(DescriptorXKey {
            origin: Some((self.master_fingerprint, self.path.clone())),
            xkey: self.xpub,
            derivation_path: DerivationPath::from(vec![ChildNumber::Normal {
                index: branch.index(),
            }]),
            wildcard: Wildcard::Unhardened,
        })
    }
}

impl fmt::Display for AccountXpub {
    /// `[73c5da0a/48h/0h/0h/2h]xpub…`, hardened steps written `h` as Bitcoin Core does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}", self.master_fingerprint)?;
        for step in &self.path {
            write!(f, "/{step:#}")?;
        }
        write!(f, "]{}", self.xpub)
    }
}

impl FromStr for AccountXpub {
    type Err = UtxoError;

    /// Parses `[fingerprint/48h/coin'/account'/script']xpub…` (`h` or `'` for hardened), e.g.
    /// the configured xpub of the backup key C.
    ///
    /// # Errors
    /// [`UtxoError::InvalidAccountXpub`] if the text is not a key expression with an origin
    /// and nothing after the xpub; [`UtxoError::NotAnAccountKey`] if it is not a BIP48 account.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || UtxoError::InvalidAccountXpub {
            text: text.to_owned(),
        };
        let key = DescriptorPublicKey::from_str(text).map_err(|_| invalid())?;
        let DescriptorPublicKey::XPub(xkey) = key else {
            return Err(invalid());
        };
        let Some((master_fingerprint, path)) = xkey.origin else {
            return Err(invalid());
        };
        if !xkey.derivation_path.is_empty() || xkey.wildcard != Wildcard::None {
            return Err(invalid());
        }
        Self::new(master_fingerprint, path, xkey.xkey)
    }
}

/// The BIP48 account path `m/48'/coin_type'/0'/script_type'` of `network` and `script_type`.
pub fn bip48_account_path(network: UtxoNetwork, script_type: Bip48ScriptType) -> DerivationPath {
    let hardened = |index| ChildNumber::Hardened { index };
    DerivationPath::from(vec![
        hardened(BIP48_PURPOSE),
        hardened(network.coin_type()),
        hardened(BIP48_ACCOUNT),
        hardened(script_type.index()),
    ])
}

impl MasterKey {
    /// The BIP48 account xpub `m/48'/coin_type'/0'/script_type'` of this master key for
    /// `network`, with its origin (this key's fingerprint), ready for [`UtxoWallet::new`]. The
    /// xpub carries `network`'s version bytes (`xpub…` on mainnets, `tpub…` otherwise).
    ///
    /// # Errors
    /// [`UtxoError::Derivation`] if a BIP32 derivation step fails (probability below 2^-127).
    pub fn bip48_account_xpub(
        &self,
        network: UtxoNetwork,
        script_type: Bip48ScriptType,
    ) -> Result<AccountXpub, UtxoError> {
        let master_fingerprint = self.xpub_at(&DerivationPath::master())?.fingerprint();
        let path = bip48_account_path(network, script_type);
        let mut xpub = self.xpub_at(&path)?;
        xpub.network = network.network_kind();
        let account = AccountXpub::new(master_fingerprint, path, xpub)?;
        assert_eq!(account.coin_type(), network.coin_type());
        Ok(account)
    }
}

/// One derived address of a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DerivedAddress {
    /// Receive or change.
    pub branch: Branch,
    /// The index below the branch (`…/branch/index` of every key), below 2^31.
    pub index: u32,
    /// The address text in the network's encoding (bech32 or Base58Check).
    pub address: String,
    /// The output script (scriptPubKey) that pays to the address; what block scanning
    /// matches.
    pub script_pubkey: ScriptBuf,
}

/// A 2-of-3 multisig wallet over the BIP48 account keys A, B, C on one UTXO network: its
/// receive and change descriptors (`sortedmulti`, so key order does not change scripts) and the
/// addresses and scriptPubKeys they derive. Holds public keys only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtxoWallet {
    network: UtxoNetwork,
    script: MultisigScript,
    keys: [AccountXpub; MULTISIG_KEY_COUNT],
    receive: Descriptor<DescriptorPublicKey>,
    change: Descriptor<DescriptorPublicKey>,
}

/// The descriptor type of a [`UtxoWallet`] (one name for readers who look for it).
pub type MultisigDescriptor = UtxoWallet;

impl UtxoWallet {
    /// Builds the wallet `script(sortedmulti(2,A/branch/*,B/branch/*,C/branch/*))` on
    /// `network` from `keys` = `[A, B, C]` (this order is kept in the descriptor text).
    ///
    /// The script type step of the keys' paths is not checked, so a wallet can be built over
    /// keys of another BIP48 script type, as the Bitcoin Core vectors do.
    ///
    /// # Errors
    /// [`UtxoError::ScriptNotSupported`] for a segwit script on Dash;
    /// [`UtxoError::KeyNetworkMismatch`] if a key's version bytes or coin type are not
    /// `network`'s; [`UtxoError::DuplicateKey`] if two keys are equal;
    /// [`UtxoError::Descriptor`] if `miniscript` refuses the descriptor.
    pub fn new(
        network: UtxoNetwork,
        script: MultisigScript,
        keys: [AccountXpub; MULTISIG_KEY_COUNT],
    ) -> Result<Self, UtxoError> {
        if network.is_dash() && script.is_segwit() {
            return Err(UtxoError::ScriptNotSupported { network, script });
        }
        for (position, key) in keys.iter().enumerate() {
            if key.xpub.network != network.network_kind() || key.coin_type() != network.coin_type()
            {
                return Err(UtxoError::KeyNetworkMismatch {
                    key: position,
                    network,
                    coin_type: key.coin_type(),
                    found: key.xpub.network,
                });
            }
        }
        for first in 0..MULTISIG_KEY_COUNT {
            for second in first + 1..MULTISIG_KEY_COUNT {
                if keys[first].xpub.public_key == keys[second].xpub.public_key {
                    return Err(UtxoError::DuplicateKey { first, second });
                }
            }
        }
        let receive = build_descriptor(script, &keys, Branch::Receive)?;
        let change = build_descriptor(script, &keys, Branch::Change)?;
        Ok(Self {
            network,
            script,
            keys,
            receive,
            change,
        })
    }

    /// The wallet's network.
    pub fn network(&self) -> UtxoNetwork {
        self.network
    }

    /// The wallet's script type.
    pub fn script(&self) -> MultisigScript {
        self.script
    }

    /// The account keys `[A, B, C]`.
    pub fn keys(&self) -> &[AccountXpub; MULTISIG_KEY_COUNT] {
        &self.keys
    }

    /// The ranged descriptor of `branch` as a `miniscript` value, for PSBT building and
    /// signing.
    pub fn ranged_descriptor(&self, branch: Branch) -> &Descriptor<DescriptorPublicKey> {
        match branch {
            Branch::Receive => &self.receive,
            Branch::Change => &self.change,
        }
    }

    /// The descriptor of `branch` exactly as Bitcoin Core's `getdescriptorinfo` prints it:
    /// hardened steps as `h`, then `#` and the BIP380 checksum, e.g.
    /// `wsh(sortedmulti(2,[73c5da0a/48h/0h/0h/2h]xpub…/0/*,…))#j6u0jndq`. This is the text
    /// to import into a watch-only Bitcoin Core wallet.
    pub fn descriptor(&self, branch: Branch) -> String {
        // `miniscript` writes hardened steps as `'`; Bitcoin Core writes `h`, and the checksum
        // covers the text, so rewrite them (a descriptor has no other `'`) and re-checksum.
        let body = format!("{:#}", self.ranged_descriptor(branch)).replace('\'', "h");
        let checksum = miniscript::descriptor::checksum::desc_checksum(&body)
            .expect("a descriptor printed by miniscript has only checksum characters");
        let text = format!("{body}#{checksum}");
        debug_assert_eq!(
            Descriptor::<DescriptorPublicKey>::from_str(&text)
                .ok()
                .as_ref(),
            Some(self.ranged_descriptor(branch)),
            "the printed descriptor parses back to itself"
        );
        text
    }

    /// [`UtxoWallet::descriptor`] of [`Branch::Receive`] (deposit addresses).
    pub fn receive_descriptor(&self) -> String {
        self.descriptor(Branch::Receive)
    }

    /// [`UtxoWallet::descriptor`] of [`Branch::Change`].
    pub fn change_descriptor(&self) -> String {
        self.descriptor(Branch::Change)
    }

    /// The definite (non-ranged) descriptor at `branch/index`, whose keys are the three
    /// derived public keys, for scripts and signing.
    ///
    /// # Errors
    /// [`UtxoError::IndexOutOfRange`] if `index >= 2^31`; [`UtxoError::Descriptor`] if
    /// derivation fails.
    pub fn definite_descriptor(
        &self,
        branch: Branch,
        index: u32,
    ) -> Result<Descriptor<DefiniteDescriptorKey>, UtxoError> {
        if ChildNumber::from_normal_idx(index).is_err() {
            return Err(UtxoError::IndexOutOfRange { index });
        }
        self.ranged_descriptor(branch)
            .at_derivation_index(index)
            .map_err(|error| UtxoError::Descriptor(error.to_string()))
    }

    /// The scriptPubKey at `branch/index`: `OP_0 <32-byte SHA256(witness script)>` for `wsh`,
    /// `OP_HASH160 <20-byte HASH160(script)> OP_EQUAL` for `sh` and `sh(wsh)`. The same
    /// script on Bitcoin and Dash.
    ///
    /// # Errors
    /// As [`UtxoWallet::definite_descriptor`].
    pub fn script_pubkey(&self, branch: Branch, index: u32) -> Result<ScriptBuf, UtxoError> {
        Ok(self.definite_descriptor(branch, index)?.script_pubkey())
    }

    /// The address at `branch/index` in the network's encoding: bech32 (`bc1q…`, `tb1q…`,
    /// `bcrt1q…`) for `wsh`; Base58Check P2SH (`3…`, `2…`; Dash `7…`, `8…`/`9…`) otherwise.
    ///
    /// # Errors
    /// As [`UtxoWallet::definite_descriptor`].
    pub fn address(&self, branch: Branch, index: u32) -> Result<String, UtxoError> {
        Ok(self.derive(branch, index)?.address)
    }

    /// The address and scriptPubKey at `branch/index`.
    ///
    /// # Errors
    /// As [`UtxoWallet::definite_descriptor`].
    pub fn derive(&self, branch: Branch, index: u32) -> Result<DerivedAddress, UtxoError> {
        let definite = self.definite_descriptor(branch, index)?;
        let script_pubkey = definite.script_pubkey();
        let address = match self.network.bitcoin_network() {
            Some(network) => definite
                .address(network)
                .map_err(|error| UtxoError::Descriptor(error.to_string()))?
                .to_string(),
            None => dash_address(&script_pubkey, self.network)
                .expect("a dash wallet is sh(sortedmulti), whose scriptPubKey is p2sh"),
        };
        Ok(DerivedAddress {
            branch,
            index,
            address,
            script_pubkey,
        })
    }
}

/// `script(sortedmulti(2, keys/branch/*))` for one branch.
fn build_descriptor(
    script: MultisigScript,
    keys: &[AccountXpub; MULTISIG_KEY_COUNT],
    branch: Branch,
) -> Result<Descriptor<DescriptorPublicKey>, UtxoError> {
    let keys: Vec<DescriptorPublicKey> =
        keys.iter().map(|key| key.descriptor_key(branch)).collect();
    let descriptor = match script {
        MultisigScript::Wsh => Descriptor::new_wsh_sortedmulti(MULTISIG_THRESHOLD, keys),
        MultisigScript::ShWsh => Descriptor::new_sh_wsh_sortedmulti(MULTISIG_THRESHOLD, keys),
        MultisigScript::Sh => Descriptor::new_sh_sortedmulti(MULTISIG_THRESHOLD, keys),
    }
    .map_err(|error| UtxoError::Descriptor(error.to_string()))?;
    descriptor
        .sanity_check()
        .map_err(|error| UtxoError::Descriptor(error.to_string()))?;
    Ok(descriptor)
}

/// The Dash address of a P2PKH or P2SH scriptPubKey on a Dash `network`: Base58Check of the
/// version byte (P2PKH 76 / P2SH 16 on mainnet, 140 / 19 on testnet and regtest) followed by the
/// 20-byte HASH160 in the script. `None` for any other script or a Bitcoin network.
pub fn dash_address(script_pubkey: &Script, network: UtxoNetwork) -> Option<String> {
    let (p2pkh_version, p2sh_version) = network.dash_address_versions()?;
    let bytes = script_pubkey.as_bytes();
    let (version, hash) = if script_pubkey.is_p2sh() {
        // OP_HASH160 <push 20> hash OP_EQUAL
        (p2sh_version, &bytes[2..22])
    } else if script_pubkey.is_p2pkh() {
        // OP_DUP OP_HASH160 <push 20> hash OP_EQUALVERIFY OP_CHECKSIG
        (p2pkh_version, &bytes[3..23])
    } else {
        return None;
    };
    assert_eq!(hash.len(), bitcoin::hashes::hash160::Hash::LEN);
    let mut payload = Vec::with_capacity(1 + hash.len());
    payload.push(version);
    payload.extend_from_slice(hash);
    Some(bitcoin::base58::encode_check(&payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mnemonic::Mnemonic;

    const MNEMONIC_A: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    const MNEMONIC_B: &str =
        "legal winner thank year wave sausage worth useful legal winner thank yellow";
    const MNEMONIC_C: &str =
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage above";

    fn account(words: &str, network: UtxoNetwork, script: MultisigScript) -> AccountXpub {
        let seed = Mnemonic::parse(words).expect("test mnemonic").to_seed();
        MasterKey::from_seed(&seed)
            .expect("master")
            .bip48_account_xpub(network, script.bip48_script_type())
            .expect("account")
    }

    fn keys(network: UtxoNetwork, script: MultisigScript) -> [AccountXpub; 3] {
        [MNEMONIC_A, MNEMONIC_B, MNEMONIC_C].map(|words| account(words, network, script))
    }

    /// Proves that a wallet refuses segwit on Dash, keys of another network, a repeated key
    /// and a hardened index. Steps: build each bad case, match the error variant.
    #[test]
    fn wallet_rejects_bad_input() {
        let dash = keys(UtxoNetwork::Dash, MultisigScript::Sh);
        let err = UtxoWallet::new(UtxoNetwork::Dash, MultisigScript::Wsh, dash.clone())
            .expect_err("no segwit on dash");
        assert!(matches!(err, UtxoError::ScriptNotSupported { .. }), "{err}");

        // Dash mainnet keys (coin type 5) on Bitcoin mainnet: same version bytes, wrong coin.
        let err = UtxoWallet::new(UtxoNetwork::Bitcoin, MultisigScript::Sh, dash.clone())
            .expect_err("coin type");
        assert!(
            matches!(
                err,
                UtxoError::KeyNetworkMismatch {
                    key: 0,
                    coin_type: 5,
                    ..
                }
            ),
            "{err}"
        );
        // Testnet keys (tpub) on Dash mainnet.
        let test = keys(UtxoNetwork::DashTestnet, MultisigScript::Sh);
        let err = UtxoWallet::new(UtxoNetwork::Dash, MultisigScript::Sh, test.clone())
            .expect_err("version bytes");
        assert!(matches!(err, UtxoError::KeyNetworkMismatch { .. }), "{err}");

        let [a, b, _] = dash;
        let err = UtxoWallet::new(UtxoNetwork::Dash, MultisigScript::Sh, [a.clone(), b, a])
            .expect_err("duplicate");
        assert!(
            matches!(
                err,
                UtxoError::DuplicateKey {
                    first: 0,
                    second: 2
                }
            ),
            "{err}"
        );

        let wallet =
            UtxoWallet::new(UtxoNetwork::DashTestnet, MultisigScript::Sh, test).expect("wallet");
        let err = wallet
            .address(Branch::Receive, 1 << 31)
            .expect_err("hardened");
        assert!(matches!(err, UtxoError::IndexOutOfRange { index } if index == 1 << 31));
    }

    /// Proves that an account key expression round-trips through `Display`/`FromStr` with `h`
    /// for hardened steps, that `'` is accepted, and that non-account expressions are refused.
    #[test]
    fn account_xpub_text_round_trips() {
        let key = account(MNEMONIC_A, UtxoNetwork::Bitcoin, MultisigScript::Wsh);
        let text = key.to_string();
        assert!(text.starts_with("[73c5da0a/48h/0h/0h/2h]xpub"), "{text}");
        assert_eq!(AccountXpub::from_str(&text).expect("parses"), key);
        let with_primes = format!("[73c5da0a/48'/0'/0'/2']{}", key.xpub());
        assert_eq!(AccountXpub::from_str(&with_primes).expect("parses"), key);

        for bad in [
            key.xpub().to_string(),                           // no origin
            format!("{text}/0/*"),                            // ranged
            format!("[73c5da0a/44h/0h/0h/2h]{}", key.xpub()), // not bip48
            format!("[73c5da0a/48h/0h/0h]{}", key.xpub()),    // depth mismatch
            "not a key".to_owned(),
        ] {
            assert!(AccountXpub::from_str(&bad).is_err(), "{bad}");
        }
    }

    /// Proves that network names round-trip and an unknown one is refused.
    #[test]
    fn network_names_round_trip() {
        for network in UtxoNetwork::ALL {
            assert_eq!(
                network.name().parse::<UtxoNetwork>().expect("name"),
                network
            );
        }
        assert!(matches!(
            "litecoin".parse::<UtxoNetwork>(),
            Err(UtxoError::UnknownNetwork { .. })
        ));
    }
}
