//! Signing, combining and finalizing [BIP174](https://github.com/bitcoin/bips/blob/master/bip-0174.mediawiki)
//! PSBTs that spend the 2-of-3 `wsh(sortedmulti(…))` (Bitcoin) or legacy `sh(sortedmulti(…))`
//! (Dash) wallet of [`crate::utxo`].
//!
//! - [`parse_psbt`] / [`psbt_from_bytes`]: reads a PSBT in version 0 (BIP174) or version 2
//!   ([BIP370](https://github.com/bitcoin/bips/blob/master/bip-0370.mediawiki), what Bitcoin
//!   Core ≥ 30 prints). `rust-bitcoin` 0.32 only knows version 0, so a version 2 PSBT is
//!   rewritten byte for byte into version 0: the unsigned transaction is rebuilt from the
//!   per-input and per-output v2 fields, every other key-value pair is kept unchanged.
//! - [`sign_psbt`]: one key (A hot, or B cosigner) adds its ECDSA signatures (SIGHASH_ALL,
//!   RFC6979 nonces, low S and low R as Bitcoin Core grinds them, so signatures are
//!   byte-identical to Core's) to every input whose `bip32_derivation` names its master key
//!   fingerprint, after checking that the input really spends our wallet. `wsh` inputs use the
//!   segwit v0 sighash of [BIP143](https://github.com/bitcoin/bips/blob/master/bip-0143.mediawiki);
//!   `sh` inputs (Dash) the legacy sighash, which does not commit to the input amount.
//! - [`combine_psbt`]: BIP174 combiner (`rust-bitcoin`'s `Psbt::combine`).
//! - [`finalize_psbt`]: BIP174 finalizer and extractor (`miniscript`'s `PsbtExt::finalize_mut`,
//!   which checks every signature): for `wsh` the witness `[<empty>, sig…, witness_script]`, for
//!   `sh` the scriptSig `OP_0 <sig…> <redeem_script>`; signatures in the script's public key
//!   order.
//!
//! Dash `sh` inputs: BIP174 asks for `non_witness_utxo` (the whole previous transaction) on
//! non-segwit inputs. Coinhub's wallet does not keep previous transactions, so its `sh` PSBTs
//! carry the spent output (amount and scriptPubKey) in `witness_utxo` instead, a convention
//! shared by its signer and cosigner (see [`crate::spend`]). [`sign_psbt`] accepts either field
//! for `sh` and, when both are present, requires them to agree.
//!
//! Private keys are derived from the seed for the duration of one call, held in erasing
//! guards, and never logged or put into an error.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::absolute::LockTime;
use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, Xpriv};
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Message, Secp256k1, Signing};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use miniscript::psbt::PsbtExt;

use crate::mnemonic::Seed;
use crate::utxo::{Branch, MultisigScript, UtxoError, UtxoWallet};

/// The 5-byte magic that starts every serialized PSBT (`psbt` `0xff`).
const PSBT_MAGIC: &[u8; 5] = b"psbt\xff";

/// Global key type of the unsigned transaction (version 0 only).
const GLOBAL_UNSIGNED_TX: u64 = 0x00;
/// Global key types that exist only in version 2 (tx version, fallback locktime, input count,
/// output count, tx modifiable) and the PSBT version itself.
const GLOBAL_TX_VERSION: u64 = 0x02;
const GLOBAL_FALLBACK_LOCKTIME: u64 = 0x03;
const GLOBAL_INPUT_COUNT: u64 = 0x04;
const GLOBAL_OUTPUT_COUNT: u64 = 0x05;
const GLOBAL_TX_MODIFIABLE: u64 = 0x06;
const GLOBAL_VERSION: u64 = 0xfb;
/// Per-input version 2 key types: previous txid, output index, sequence, required time and
/// height locktimes.
const IN_PREVIOUS_TXID: u64 = 0x0e;
const IN_OUTPUT_INDEX: u64 = 0x0f;
const IN_SEQUENCE: u64 = 0x10;
const IN_REQUIRED_TIME_LOCKTIME: u64 = 0x11;
const IN_REQUIRED_HEIGHT_LOCKTIME: u64 = 0x12;
/// Per-output version 2 key types: amount (satoshis, i64 LE) and script.
const OUT_AMOUNT: u64 = 0x03;
const OUT_SCRIPT: u64 = 0x04;

/// Why a PSBT could not be read, signed, combined or finalized. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsbtError {
    /// The text is not base64.
    #[error("psbt is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not a well-formed PSBT (version 0 after any v2 rewrite).
    #[error("malformed psbt: {0}")]
    Malformed(String),
    /// The PSBT declares a version other than 0 or 2.
    #[error("unsupported psbt version {version}")]
    UnsupportedVersion {
        /// The `PSBT_GLOBAL_VERSION` value.
        version: u32,
    },
    /// A version 2 input carries a required locktime; rewriting it into version 0 (which
    /// needs the BIP370 locktime choice) is not supported.
    #[error("psbt v2 input {input} has a required locktime, which is not supported")]
    RequiredLocktime {
        /// Index of the input.
        input: usize,
    },
    /// The wallet is neither `wsh` nor `sh`; `sh(wsh)` spends are not signed here.
    #[error("only wsh and sh wallets can be signed, not {script}")]
    ScriptNotSupported {
        /// The wallet's script type.
        script: MultisigScript,
    },
    /// The seed's master fingerprint is not one of the wallet's three keys.
    #[error("key with master fingerprint {fingerprint} is not a key of this wallet")]
    NotAWalletKey {
        /// Fingerprint of the seed's master key.
        fingerprint: Fingerprint,
    },
    /// An input names our fingerprint with a path that is not `account/branch/index` under our
    /// BIP48 account (branch 0 or 1, index non-hardened).
    #[error("input {input}: derivation path {path} is not under the bip48 account {account}")]
    NotUnderAccount {
        /// Index of the input.
        input: usize,
        /// The path in the PSBT.
        path: DerivationPath,
        /// Our account path.
        account: DerivationPath,
    },
    /// The public key the input lists for our fingerprint is not the one derived at its path.
    #[error("input {input}: public key does not match the key derived at {path}")]
    KeyMismatch {
        /// Index of the input.
        input: usize,
        /// The path in the PSBT.
        path: DerivationPath,
    },
    /// The input has no `witness_utxo` (the amount signed by segwit v0); for an `sh` wallet,
    /// neither `witness_utxo` nor `non_witness_utxo`.
    #[error("input {input}: no witness_utxo")]
    MissingWitnessUtxo {
        /// Index of the input.
        input: usize,
    },
    /// The input's `witness_script` (`wsh`) or `redeem_script` (`sh`) is missing or is not our
    /// 2-of-3 sortedmulti at the path, or the spent output does not pay to its P2WSH (`wsh`) or
    /// P2SH (`sh`).
    #[error("input {input}: witness or redeem script is not our 2-of-3 sortedmulti at {path}")]
    ForeignScript {
        /// Index of the input.
        input: usize,
        /// The path in the PSBT.
        path: DerivationPath,
    },
    /// The input's `non_witness_utxo` is not the transaction spent, or its output differs from
    /// `witness_utxo`.
    #[error("input {input}: non_witness_utxo does not match the outpoint or witness_utxo")]
    UtxoMismatch {
        /// Index of the input.
        input: usize,
    },
    /// The input asks for a sighash type other than SIGHASH_ALL.
    #[error("input {input}: sighash type {sighash} is not SIGHASH_ALL")]
    SighashType {
        /// Index of the input.
        input: usize,
        /// The requested type, as text.
        sighash: String,
    },
    /// Computing the BIP143 or legacy sighash failed (input index out of range, …).
    #[error("input {input}: sighash: {reason}")]
    Sighash {
        /// Index of the input.
        input: usize,
        /// Why.
        reason: String,
    },
    /// Deriving the wallet's script failed.
    #[error(transparent)]
    Wallet(#[from] UtxoError),
    /// A BIP32 derivation step failed (probability below 2^-127).
    #[error("bip32 derivation failed: {0}")]
    Bip32(#[from] bitcoin::bip32::Error),
    /// The two PSBTs are not for the same unsigned transaction.
    #[error("cannot combine psbts: {0}")]
    Combine(String),
    /// Some input cannot be finalized (e.g. fewer than 2 valid signatures). One reason per
    /// failing input, from `miniscript`.
    #[error("cannot finalize psbt: {}", .0.join("; "))]
    Finalize(Vec<String>),
    /// The finalized transaction could not be extracted (e.g. absurd fee rate).
    #[error("cannot extract transaction: {0}")]
    Extract(String),
}

/// What [`sign_psbt`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SignReport {
    /// Indexes of the inputs that received our signature (ascending).
    pub signed: Vec<usize>,
    /// Indexes of the inputs that do not name our key and were left alone (ascending).
    pub skipped: Vec<usize>,
}

/// An extended private key erased on drop (same idea as `derivation`'s guard).
struct XprivGuard(Xpriv);

impl Drop for XprivGuard {
    fn drop(&mut self) {
        self.0.private_key.non_secure_erase();
        self.0.chain_code = ChainCode::from([0u8; 32]);
    }
}

/// Parses a base64 PSBT, version 0 or 2 (a v2 PSBT is rewritten into v0, see the module doc).
///
/// # Errors
/// [`PsbtError::Base64`], then as [`psbt_from_bytes`].
pub fn parse_psbt(base64: &str) -> Result<Psbt, PsbtError> {
    let bytes = BASE64.decode(base64.trim())?;
    psbt_from_bytes(&bytes)
}

/// Parses serialized PSBT bytes, version 0 or 2.
///
/// # Errors
/// [`PsbtError::Malformed`] if the bytes are not a PSBT; [`PsbtError::UnsupportedVersion`]
/// for versions other than 0 and 2; [`PsbtError::RequiredLocktime`] for a v2 input with a
/// required locktime.
pub fn psbt_from_bytes(bytes: &[u8]) -> Result<Psbt, PsbtError> {
    let v0 = v2_to_v0(bytes)?;
    Psbt::deserialize(&v0).map_err(|error| PsbtError::Malformed(error.to_string()))
}

/// A PSBT as base64 text (version 0, which Bitcoin Core and every BIP174 tool accept).
pub fn psbt_to_base64(psbt: &Psbt) -> String {
    BASE64.encode(psbt.serialize())
}

/// Adds the signatures of the key with BIP39 `seed` to `psbt`, for the 2-of-3 `wsh` or `sh`
/// `wallet`.
///
/// For every input whose `bip32_derivation` names this seed's master fingerprint: the path
/// must be `account/branch/index` under the wallet's BIP48 account for that key (branch 0
/// receive or 1 change); the listed public key must be the one derived there; a
/// `non_witness_utxo`, if present, must be the spent transaction and agree with `witness_utxo`;
/// the sighash type must be absent or ALL.
///
/// - `wsh`: the `witness_script` must be exactly the wallet's sortedmulti script at
///   `branch/index` and the `witness_utxo` must pay to its P2WSH. The BIP143 sighash
///   (SIGHASH_ALL, amount from `witness_utxo`) is signed.
/// - `sh` (Dash): the `redeem_script` must be exactly the wallet's sortedmulti script at
///   `branch/index` and the spent output (`witness_utxo`, or the `non_witness_utxo` output)
///   must pay to its P2SH. The legacy sighash (SIGHASH_ALL, script code = redeem script) is
///   signed; it does not commit to the amount, so the amount is not checked here.
///
/// Signatures use RFC6979, low S and low R (as Bitcoin Core does) and go into `partial_sigs`.
/// Inputs not naming our key are left alone (reported as skipped).
///
/// All checks run before anything is written: on error `psbt` is unchanged.
///
/// # Errors
/// [`PsbtError::ScriptNotSupported`] for an `sh(wsh)` wallet; [`PsbtError::NotAWalletKey`] if the
/// seed is not A, B or C; per input [`PsbtError::NotUnderAccount`],
/// [`PsbtError::KeyMismatch`], [`PsbtError::MissingWitnessUtxo`],
/// [`PsbtError::ForeignScript`], [`PsbtError::UtxoMismatch`], [`PsbtError::SighashType`],
/// [`PsbtError::Sighash`]; [`PsbtError::Bip32`] if derivation fails.
pub fn sign_psbt(
    psbt: &mut Psbt,
    seed: &Seed,
    wallet: &UtxoWallet,
) -> Result<SignReport, PsbtError> {
    let script_type = wallet.script();
    if !matches!(script_type, MultisigScript::Wsh | MultisigScript::Sh) {
        return Err(PsbtError::ScriptNotSupported {
            script: script_type,
        });
    }
    let secp = Secp256k1::new();
    let master = XprivGuard(Xpriv::new_master(
        wallet.network().network_kind(),
        seed.as_bytes(),
    )?);
    let fingerprint = master.0.fingerprint(&secp);
    let account = wallet
        .keys()
        .iter()
        .find(|key| key.master_fingerprint() == fingerprint)
        .ok_or(PsbtError::NotAWalletKey { fingerprint })?
        .path()
        .clone();

    let mut signatures = Vec::new();
    let mut report = SignReport::default();
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    for (input, psbt_input) in psbt.inputs.iter().enumerate() {
        let ours: Vec<_> = psbt_input
            .bip32_derivation
            .iter()
            .filter(|(_, (fp, _))| *fp == fingerprint)
            .collect();
        if ours.is_empty() {
            report.skipped.push(input);
            continue;
        }
        if let Some(sighash) = psbt_input.sighash_type
            && sighash.ecdsa_hash_ty().ok() != Some(EcdsaSighashType::All)
        {
            return Err(PsbtError::SighashType {
                input,
                sighash: sighash.to_string(),
            });
        }
        let witness_utxo = psbt_input.witness_utxo.as_ref();
        if script_type == MultisigScript::Wsh && witness_utxo.is_none() {
            return Err(PsbtError::MissingWitnessUtxo { input });
        }
        let mut spent_output = None;
        if let Some(previous) = &psbt_input.non_witness_utxo {
            let outpoint = psbt
                .unsigned_tx
                .input
                .get(input)
                .map(|txin| txin.previous_output)
                .ok_or(PsbtError::UtxoMismatch { input })?;
            let spent = usize::try_from(outpoint.vout)
                .ok()
                .and_then(|vout| previous.output.get(vout));
            if previous.compute_txid() != outpoint.txid
                || spent.is_none()
                || witness_utxo.is_some_and(|utxo| spent != Some(utxo))
            {
                return Err(PsbtError::UtxoMismatch { input });
            }
            spent_output = spent;
        }
        let utxo = witness_utxo
            .or(spent_output)
            .ok_or(PsbtError::MissingWitnessUtxo { input })?;
        for (public_key, (_, path)) in ours {
            let (branch, index) =
                split_account_path(path, &account).ok_or_else(|| PsbtError::NotUnderAccount {
                    input,
                    path: path.clone(),
                    account: account.clone(),
                })?;
            let child = XprivGuard(master.0.derive_priv(&secp, path)?);
            if child.0.private_key.public_key(&secp) != *public_key {
                return Err(PsbtError::KeyMismatch {
                    input,
                    path: path.clone(),
                });
            }
            let definite = wallet.definite_descriptor(branch, index)?;
            let script = definite
                .explicit_script()
                .map_err(|error| UtxoError::Descriptor(error.to_string()))?;
            let (carried, script_pubkey) = if script_type == MultisigScript::Sh {
                (
                    psbt_input.redeem_script.as_ref(),
                    ScriptBuf::new_p2sh(&script.script_hash()),
                )
            } else {
                (
                    psbt_input.witness_script.as_ref(),
                    ScriptBuf::new_p2wsh(&script.wscript_hash()),
                )
            };
            if carried != Some(&script) || utxo.script_pubkey != script_pubkey {
                return Err(PsbtError::ForeignScript {
                    input,
                    path: path.clone(),
                });
            }
            let sighash_error = |reason: String| PsbtError::Sighash { input, reason };
            let sighash = if script_type == MultisigScript::Sh {
                cache
                    .legacy_signature_hash(input, &script, EcdsaSighashType::All.to_u32())
                    .map_err(|error| sighash_error(error.to_string()))?
                    .to_byte_array()
            } else {
                cache
                    .p2wsh_signature_hash(input, &script, utxo.value, EcdsaSighashType::All)
                    .map_err(|error| sighash_error(error.to_string()))?
                    .to_byte_array()
            };
            let signature = sign_low_r(&secp, &sighash, &child.0);
            signatures.push((input, bitcoin::PublicKey::new(*public_key), signature));
        }
        report.signed.push(input);
    }
    for (input, public_key, signature) in signatures {
        let Some(psbt_input) = psbt.inputs.get_mut(input) else {
            continue;
        };
        psbt_input.partial_sigs.insert(
            public_key,
            bitcoin::ecdsa::Signature {
                signature,
                sighash_type: EcdsaSighashType::All,
            },
        );
    }
    Ok(report)
}

/// `sighash` signed with `key`: RFC6979 nonce, low S, and R ground below 2^255 with the extra
/// entropy counter exactly as Bitcoin Core's `CKey::Sign` does (so 71-byte DER + sighash).
fn sign_low_r<C: Signing>(
    secp: &Secp256k1<C>,
    sighash: &[u8; 32],
    key: &Xpriv,
) -> bitcoin::secp256k1::ecdsa::Signature {
    let message = Message::from_digest(*sighash);
    secp.sign_ecdsa_low_r(&message, &key.private_key)
}

/// `(branch, index)` if `path` is `account/branch/index` with branch 0 or 1 and a
/// non-hardened index.
pub(crate) fn split_account_path(
    path: &DerivationPath,
    account: &DerivationPath,
) -> Option<(Branch, u32)> {
    let steps: &[ChildNumber] = path.as_ref();
    let prefix: &[ChildNumber] = account.as_ref();
    let rest = steps.strip_prefix(prefix)?;
    match rest {
        [
            ChildNumber::Normal { index: branch },
            ChildNumber::Normal { index },
        ] => {
            let branch = match branch {
                0 => Branch::Receive,
                1 => Branch::Change,
                _ => return None,
            };
            Some((branch, *index))
        }
        _ => None,
    }
}

/// BIP174 combiner: merges the signatures and other fields of `other` into `base`.
///
/// # Errors
/// [`PsbtError::Combine`] if the two PSBTs are not for the same unsigned transaction.
pub fn combine_psbt(base: &mut Psbt, other: Psbt) -> Result<(), PsbtError> {
    base.combine(other)
        .map_err(|error| PsbtError::Combine(error.to_string()))
}

/// BIP174 finalizer and extractor: builds each input's final witness or scriptSig from its
/// partial signatures (checked against the sighash by `miniscript`; for our `wsh` wallet the
/// witness `[<empty>, sig…, witness_script]`, for our `sh` wallet the scriptSig
/// `OP_0 <sig…> <redeem_script>`, signatures in public key order), clears the partial fields
/// as BIP174 asks, and extracts the signed transaction. `psbt` keeps the finalized state; on
/// error it is unchanged for the inputs that could not be finalized.
///
/// # Errors
/// [`PsbtError::Finalize`] if an input lacks signatures (fewer than 2 of 3) or has an invalid
/// one; [`PsbtError::Extract`] if the transaction's fee rate is absurd (over 25 000 sat/vB) or
/// the PSBT is otherwise not extractable.
pub fn finalize_psbt(psbt: &mut Psbt) -> Result<Transaction, PsbtError> {
    let secp = Secp256k1::verification_only();
    psbt.finalize_mut(&secp)
        .map_err(|errors| PsbtError::Finalize(errors.iter().map(ToString::to_string).collect()))?;
    psbt.clone()
        .extract_tx()
        .map_err(|error| PsbtError::Extract(error.to_string()))
}

// ---- BIP370 (version 2) → BIP174 (version 0) rewrite -------------------------------------

/// One key-value pair of a PSBT map: the whole key (type and key data) and the value.
struct Pair<'a> {
    key_type: u64,
    key: &'a [u8],
    value: &'a [u8],
}

/// A cursor over serialized PSBT bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], PsbtError> {
        if self.bytes.len() < len {
            return Err(PsbtError::Malformed("unexpected end of data".into()));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    /// A Bitcoin CompactSize integer.
    fn compact(&mut self) -> Result<u64, PsbtError> {
        let first = self.take(1)?[0];
        let width = match first {
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
            small => return Ok(u64::from(small)),
        };
        let mut buf = [0u8; 8];
        buf[..width].copy_from_slice(self.take(width)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn len(&mut self) -> Result<usize, PsbtError> {
        usize::try_from(self.compact()?)
            .map_err(|_| PsbtError::Malformed("length out of range".into()))
    }

    /// One map up to and including its `0x00` separator.
    fn map(&mut self) -> Result<Vec<Pair<'a>>, PsbtError> {
        let mut pairs = Vec::new();
        loop {
            let key_len = self.len()?;
            if key_len == 0 {
                return Ok(pairs);
            }
            let key = self.take(key_len)?;
            let key_type = Reader { bytes: key }.compact()?;
            let value_len = self.len()?;
            let value = self.take(value_len)?;
            pairs.push(Pair {
                key_type,
                key,
                value,
            });
        }
    }
}

/// Appends a CompactSize integer.
fn write_compact(out: &mut Vec<u8>, value: usize) {
    // usize → u64 is lossless on every supported target.
    let value = value as u64;
    match value {
        0..=0xfc => out.push(value as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(value as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(value as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

fn write_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    write_compact(out, key.len());
    out.extend_from_slice(key);
    write_compact(out, value.len());
    out.extend_from_slice(value);
}

fn fixed<const N: usize>(value: &[u8], what: &str) -> Result<[u8; N], PsbtError> {
    value
        .try_into()
        .map_err(|_| PsbtError::Malformed(format!("{what}: expected {N} bytes")))
}

fn find<'a>(pairs: &'a [Pair<'a>], key_type: u64) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|pair| pair.key_type == key_type && pair.key.len() == 1)
        .map(|pair| pair.value)
}

/// `bytes` unchanged if it is a version 0 PSBT, else the equivalent version 0 serialization.
fn v2_to_v0(bytes: &[u8]) -> Result<Vec<u8>, PsbtError> {
    let mut reader = Reader { bytes };
    if reader.take(PSBT_MAGIC.len())? != PSBT_MAGIC {
        return Err(PsbtError::Malformed("missing psbt magic".into()));
    }
    let global = reader.map()?;
    let version = match find(&global, GLOBAL_VERSION) {
        None => 0,
        Some(value) => u32::from_le_bytes(fixed(value, "psbt version")?),
    };
    match version {
        0 => return Ok(bytes.to_vec()),
        2 => {}
        version => return Err(PsbtError::UnsupportedVersion { version }),
    }
    let count = |key_type, what: &str| -> Result<usize, PsbtError> {
        let value = find(&global, key_type)
            .ok_or_else(|| PsbtError::Malformed(format!("psbt v2 without {what}")))?;
        Reader { bytes: value }.len()
    };
    let input_count = count(GLOBAL_INPUT_COUNT, "input count")?;
    let output_count = count(GLOBAL_OUTPUT_COUNT, "output count")?;
    let tx_version = find(&global, GLOBAL_TX_VERSION)
        .ok_or_else(|| PsbtError::Malformed("psbt v2 without tx version".into()))?;
    let tx_version = i32::from_le_bytes(fixed(tx_version, "tx version")?);
    let lock_time = match find(&global, GLOBAL_FALLBACK_LOCKTIME) {
        None => 0,
        Some(value) => u32::from_le_bytes(fixed(value, "fallback locktime")?),
    };

    let mut inputs = Vec::with_capacity(input_count);
    let mut tx_inputs = Vec::with_capacity(input_count);
    for input in 0..input_count {
        let pairs = reader.map()?;
        if find(&pairs, IN_REQUIRED_TIME_LOCKTIME).is_some()
            || find(&pairs, IN_REQUIRED_HEIGHT_LOCKTIME).is_some()
        {
            return Err(PsbtError::RequiredLocktime { input });
        }
        let txid = find(&pairs, IN_PREVIOUS_TXID)
            .ok_or_else(|| PsbtError::Malformed(format!("input {input} without txid")))?;
        let vout = find(&pairs, IN_OUTPUT_INDEX)
            .ok_or_else(|| PsbtError::Malformed(format!("input {input} without index")))?;
        let sequence = match find(&pairs, IN_SEQUENCE) {
            None => Sequence::MAX,
            Some(value) => Sequence(u32::from_le_bytes(fixed(value, "sequence")?)),
        };
        tx_inputs.push(TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array(fixed(txid, "previous txid")?),
                vout: u32::from_le_bytes(fixed(vout, "output index")?),
            },
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        });
        inputs.push(pairs);
    }
    let mut outputs = Vec::with_capacity(output_count);
    let mut tx_outputs = Vec::with_capacity(output_count);
    for output in 0..output_count {
        let pairs = reader.map()?;
        let amount = find(&pairs, OUT_AMOUNT)
            .ok_or_else(|| PsbtError::Malformed(format!("output {output} without amount")))?;
        let amount = i64::from_le_bytes(fixed(amount, "amount")?);
        let amount = u64::try_from(amount)
            .map_err(|_| PsbtError::Malformed(format!("output {output}: negative amount")))?;
        let script = find(&pairs, OUT_SCRIPT)
            .ok_or_else(|| PsbtError::Malformed(format!("output {output} without script")))?;
        tx_outputs.push(TxOut {
            value: Amount::from_sat(amount),
            script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
        });
        outputs.push(pairs);
    }
    if !reader.bytes.is_empty() {
        return Err(PsbtError::Malformed("trailing bytes after psbt".into()));
    }
    let tx = Transaction {
        version: Version(tx_version),
        lock_time: LockTime::from_consensus(lock_time),
        input: tx_inputs,
        output: tx_outputs,
    };

    let v2_only = |pair: &Pair<'_>, types: &[u64]| types.contains(&pair.key_type);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PSBT_MAGIC);
    write_pair(
        &mut out,
        &[GLOBAL_UNSIGNED_TX as u8],
        &bitcoin::consensus::encode::serialize(&tx),
    );
    let global_v2 = [
        GLOBAL_UNSIGNED_TX,
        GLOBAL_TX_VERSION,
        GLOBAL_FALLBACK_LOCKTIME,
        GLOBAL_INPUT_COUNT,
        GLOBAL_OUTPUT_COUNT,
        GLOBAL_TX_MODIFIABLE,
        GLOBAL_VERSION,
    ];
    // Keep the remaining pairs in key order, as BIP174 serializers do.
    let sorted = |pairs: &[Pair<'_>], drop: &[u64]| -> BTreeMap<Vec<u8>, Vec<u8>> {
        pairs
            .iter()
            .filter(|pair| !v2_only(pair, drop))
            .map(|pair| (pair.key.to_vec(), pair.value.to_vec()))
            .collect()
    };
    let maps = std::iter::once(sorted(&global, &global_v2))
        .chain(inputs.iter().map(|pairs| {
            sorted(
                pairs,
                &[
                    IN_PREVIOUS_TXID,
                    IN_OUTPUT_INDEX,
                    IN_SEQUENCE,
                    IN_REQUIRED_TIME_LOCKTIME,
                    IN_REQUIRED_HEIGHT_LOCKTIME,
                ],
            )
        }))
        .chain(
            outputs
                .iter()
                .map(|pairs| sorted(pairs, &[OUT_AMOUNT, OUT_SCRIPT])),
        );
    for map in maps {
        for (key, value) in &map {
            write_pair(&mut out, key, value);
        }
        out.push(0x00);
    }
    Ok(out)
}
