//! Custody keys for Coinhub.
//!
//! - [`mnemonic`]: BIP39 mnemonics and seeds (generate, parse, seed with passphrase).
//! - [`derivation`]: BIP32/BIP44 keys for EVM chains (`m/44'/60'/0'`), EIP-55 addresses,
//!   deposit addresses from the account xpub alone.
//! - [`keystore`]: envelope encryption of a seed's BIP39 entropy under an OpenBao/Vault
//!   transit data key (AES-256-GCM), and the Vault client that talks to transit.
//! - [`utxo`]: 2-of-3 `sortedmulti` wallets for Bitcoin (`wsh`) and Dash (`sh`) over BIP48
//!   account keys: descriptors with checksums as Bitcoin Core prints them, addresses and
//!   scriptPubKeys at an index.
//! - [`policy`]: the cosigner's policy engine (pure logic): outputs = unpaid requests + change,
//!   fee cap, per-withdrawal and rolling 24 h limits, deny/allow lists.
//! - [`psbt`]: BIP174/BIP370 PSBTs of the `wsh` and `sh` wallets: sign with one key (RFC6979,
//!   low R like Bitcoin Core), combine, finalize and extract.
//! - [`spend`]: withdrawal transactions of the UTXO wallets (pure logic): coin selection,
//!   change, BIP125 fee bumps, and the cosigner's checked description of a PSBT.
//! - [`safe`]: the EVM hot wallet's 2-of-3 Safe (v1.5.0) transactions: EIP-712 SafeTx hash,
//!   owner signatures (v 27/28, packed by ascending owner), `execTransaction` calldata, and
//!   the cosigner's check that a SafeTx is a plain native or ERC-20 transfer.
//! - `testing` (cargo feature `testing`): a throwaway OpenBao dev server for tests.
//!
//! Secret material (mnemonics, seeds, private keys, data keys) lives in zeroizing buffers,
//! has a redacted `Debug`, no `Display`, and is never logged or put in an error message.
//! This crate does no node I/O; its only network peer is Vault.

pub mod derivation;
pub mod keystore;
pub mod mnemonic;
pub mod policy;
pub mod psbt;
pub mod safe;
pub mod spend;
#[cfg(feature = "testing")]
pub mod testing;
pub mod utxo;
