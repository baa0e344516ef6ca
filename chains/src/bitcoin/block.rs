//! Raw block scanning for Bitcoin and Dash: find every output that pays a watched
//! scriptPubKey without building the block's transactions.
//!
//! A block arrives consensus-serialized (REST `/rest/block/<hash>.bin`, or `getblock <hash> 0`
//! decoded from hex). [`scan_block`] walks that serialization once:
//!
//! ```text
//! header (80) | tx count (compact size) | tx*
//! tx = version (4) [marker 0x00, flag 0x01] inputs outputs [witnesses] lock time (4) [DIP2 payload]
//! ```
//!
//! Inputs and witnesses are skipped by their lengths; each output's script is looked up in a
//! [`ScriptSet`]; only a transaction with a watched output is hashed for its txid (double
//! SHA-256 of the non-witness serialization, BIP141, hashed straight from the block's bytes).
//! The walk checks the same framing rules as rust-bitcoin's decoder (minimal compact sizes,
//! segwit flag 1, at least one non-empty witness when the flag is set, no trailing bytes), so
//! a block it accepts decodes the same way there.
//!
//! Dash uses the same walk with [`TxFormat::Dash`] (no segwit; DIP2 special transactions carry
//! a payload after the lock time); see [`super::dash`].

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use alloy::primitives::U256;
use bitcoin::block::Header;
use bitcoin::consensus::Decodable;
use bitcoin::hashes::{Hash as _, HashEngine as _, sha256, sha256d};
use bitcoin::{Amount, ScriptBuf, Txid};

use crate::block::{BlockHash, BlockRef, Recipient, Transfer};

/// Length of a serialized block header, the same for Bitcoin and Dash.
pub const HEADER_LEN: usize = 80;

/// Transaction serialization rules of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TxFormat {
    /// Bitcoin: optional segregated witness (BIP141/BIP144 marker `0x00`, flag `0x01`).
    Bitcoin,
    /// Dash: no segwit; a transaction whose 16-bit version is ≥ 3 and whose 16-bit type
    /// (upper half of the 32-bit version field) is non-zero carries a compact-size-prefixed
    /// payload after `nLockTime` (DIP2).
    Dash,
}

/// Why a block could not be walked. Offsets are byte positions in the raw block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The block ended inside a field.
    #[error("block truncated: {needed} bytes needed at byte {offset}, block is {len} bytes")]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: u64,
        /// Length of the raw block.
        len: usize,
    },
    /// A compact size used more bytes than its value needs (consensus rejects it).
    #[error("non-minimal compact size at byte {offset}")]
    NonMinimalCompactSize {
        /// Where the compact size starts.
        offset: usize,
    },
    /// A segwit marker was followed by a flag other than 1 (BIP144).
    #[error("transaction {tx_index}: unsupported segwit flag {flag}")]
    UnsupportedSegwitFlag {
        /// Position of the transaction in the block (coinbase = 0).
        tx_index: u64,
        /// The flag byte found.
        flag: u8,
    },
    /// The segwit flag was set but every input's witness is empty (BIP144 forbids it).
    #[error("transaction {tx_index}: witness flag set but no witness present")]
    SuperfluousWitness {
        /// Position of the transaction in the block.
        tx_index: u64,
    },
    /// The block declares no transaction; every valid block has a coinbase.
    #[error("block has no transactions")]
    NoTransactions,
    /// Bytes remain after the last declared transaction.
    #[error("{remaining} bytes left after the last transaction, at byte {offset}")]
    TrailingBytes {
        /// Where the unread bytes start.
        offset: usize,
        /// How many there are.
        remaining: usize,
    },
}

// Script templates stored inline in a `ScriptKey`: tag byte, then the template's hash.
const TAG_P2WSH: u8 = 1; // OP_0 PUSH32 <32>                      (34 bytes)
const TAG_P2TR: u8 = 2; // OP_1 PUSH32 <32>                       (34 bytes)
const TAG_P2SH: u8 = 3; // OP_HASH160 PUSH20 <20> OP_EQUAL        (23 bytes)
const TAG_P2PKH: u8 = 4; // OP_DUP OP_HASH160 PUSH20 <20> OP_EQUALVERIFY OP_CHECKSIG (25 bytes)
const TAG_P2WPKH: u8 = 5; // OP_0 PUSH20 <20>                     (22 bytes)
const TAG_OTHER: u8 = 0xff; // any other script: SHA-256 of the whole script

/// Fixed-size, exact key of a scriptPubKey: a template tag and the template's hash payload
/// (zero-padded to 32 bytes), or [`TAG_OTHER`] and the SHA-256 of the script. Two scripts
/// have the same key only if they are equal (up to a SHA-256 collision for [`TAG_OTHER`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct ScriptKey([u8; 33]);

impl ScriptKey {
    /// The key of a standard template, `None` for any other script.
    #[inline]
    fn of_template(script: &[u8]) -> Option<Self> {
        let (tag, payload) = match script {
            [0x00, 0x20, payload @ ..] if payload.len() == 32 => (TAG_P2WSH, payload),
            [0x51, 0x20, payload @ ..] if payload.len() == 32 => (TAG_P2TR, payload),
            [0xa9, 0x14, payload @ .., 0x87] if payload.len() == 20 => (TAG_P2SH, payload),
            [0x76, 0xa9, 0x14, payload @ .., 0x88, 0xac] if payload.len() == 20 => {
                (TAG_P2PKH, payload)
            }
            [0x00, 0x14, payload @ ..] if payload.len() == 20 => (TAG_P2WPKH, payload),
            _ => return None,
        };
        let mut key = [0u8; 33];
        key[0] = tag;
        key[1..1 + payload.len()].copy_from_slice(payload);
        Some(Self(key))
    }

    /// The key of a script that is no standard template.
    fn of_other(script: &[u8]) -> Self {
        let mut key = [0u8; 33];
        key[0] = TAG_OTHER;
        key[1..]
            .copy_from_slice(<sha256::Hash as bitcoin::hashes::Hash>::hash(script).as_byte_array());
        Self(key)
    }

    fn of(script: &[u8]) -> Self {
        Self::of_template(script).unwrap_or_else(|| Self::of_other(script))
    }
}

impl Hash for ScriptKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Payloads are hash outputs (HASH160, SHA-256, a taproot key), so 8 of their bytes are
        // already uniform; no need to run a general-purpose hasher over all 33.
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[1..9]);
        state.write_u64(u64::from_le_bytes(word) ^ u64::from(self.0[0]));
    }
}

/// Hasher for [`ScriptKey`]: mixes the one `u64` the key writes.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        let mixed = (self.0 ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = mixed ^ (mixed >> 29);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `ScriptKey`; kept correct for completeness.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
}

/// Bytes of one hash-table slot: the 33-byte key plus hashbrown's one control byte.
const SLOT_BYTES: usize = 33 + 1;

/// A set of watched scriptPubKeys, sized for millions of deposit scripts.
///
/// Each script is stored as a fixed 33-byte key: standard templates (P2WSH, P2TR, P2SH,
/// P2PKH, P2WPKH) as a tag plus their hash, so lookups need no hashing beyond reading the
/// key; any other script as a tag plus its SHA-256 (computed on lookup only while such a
/// script is watched). Matching is exact. Memory is about 34 bytes per hash-table slot, with
/// between 8/7 and 16/7 slots per script (power-of-two table): see [`ScriptSet::heap_bytes`].
///
/// Not synchronized: a watcher that adds scripts while scanning wraps it in a lock.
#[derive(Clone, Default)]
pub struct ScriptSet {
    keys: HashSet<ScriptKey, BuildHasherDefault<KeyHasher>>,
    /// How many watched scripts are no standard template (hashed with SHA-256 on lookup).
    other_count: usize,
}

impl std::fmt::Debug for ScriptSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptSet")
            .field("len", &self.keys.len())
            .field("other_count", &self.other_count)
            .finish()
    }
}

impl ScriptSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `scripts` scripts before it reallocates.
    pub fn with_capacity(scripts: usize) -> Self {
        Self {
            keys: HashSet::with_capacity_and_hasher(scripts, BuildHasherDefault::default()),
            other_count: 0,
        }
    }

    /// Watches `script` (raw scriptPubKey bytes). Returns whether it was new.
    pub fn insert(&mut self, script: &[u8]) -> bool {
        let key = ScriptKey::of(script);
        let new = self.keys.insert(key);
        if new && key.0[0] == TAG_OTHER {
            self.other_count += 1;
        }
        new
    }

    /// Stops watching `script`. Returns whether it was watched.
    pub fn remove(&mut self, script: &[u8]) -> bool {
        let key = ScriptKey::of(script);
        let removed = self.keys.remove(&key);
        if removed && key.0[0] == TAG_OTHER {
            self.other_count -= 1;
        }
        removed
    }

    /// Whether `script` is watched.
    #[inline]
    pub fn contains(&self, script: &[u8]) -> bool {
        match ScriptKey::of_template(script) {
            Some(key) => self.keys.contains(&key),
            None => self.other_count > 0 && self.keys.contains(&ScriptKey::of_other(script)),
        }
    }

    /// Number of watched scripts.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Heap bytes held by the set's table (slots × 34 bytes, plus one control group),
    /// computed from its capacity the way the standard library's hash table lays it out.
    pub fn heap_bytes(&self) -> usize {
        let capacity = self.keys.capacity();
        let buckets = match capacity {
            0 => return 0,
            1..=7 => capacity + 1,
            _ => capacity / 7 * 8,
        };
        buckets * SLOT_BYTES + 16
    }
}

impl<S: AsRef<[u8]>> FromIterator<S> for ScriptSet {
    fn from_iter<I: IntoIterator<Item = S>>(scripts: I) -> Self {
        let mut set = Self::new();
        set.extend(scripts);
        set
    }
}

impl<S: AsRef<[u8]>> Extend<S> for ScriptSet {
    fn extend<I: IntoIterator<Item = S>>(&mut self, scripts: I) {
        for script in scripts {
            self.insert(script.as_ref());
        }
    }
}

/// One output paying a watched script: a deposit candidate, identified by `(txid, vout)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchedOutput {
    /// Id of the paying transaction (double SHA-256 of its non-witness serialization).
    pub txid: Txid,
    /// Output index in that transaction.
    pub vout: u32,
    /// Position of the transaction in the block (coinbase = 0).
    pub tx_index: u32,
    /// The watched scriptPubKey it pays.
    pub script_pubkey: ScriptBuf,
    /// Amount in the chain's base unit: satoshi on Bitcoin, duff on Dash (10⁻⁸ coin).
    pub amount: Amount,
}

impl WatchedOutput {
    /// The follower's [`Transfer`] for this output: txid in RPC (display) byte order,
    /// `index` = vout, the recipient is the paid `script_pubkey`, `amount` in satoshi /
    /// duff; `asset` is the configured symbol (`"BTC"`, `"DASH"`).
    pub fn to_transfer(&self, asset: impl Into<String>) -> Transfer {
        Transfer {
            txid: self.txid.to_string(),
            index: self.vout,
            recipient: Recipient::Script(self.script_pubkey.to_bytes()),
            asset: asset.into(),
            amount: U256::from(self.amount.to_sat()),
        }
    }
}

/// A DIP2 special transaction met while walking a Dash block (see [`super::dash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTx {
    /// Position of the transaction in the block (coinbase = 0).
    pub tx_index: u32,
    /// Its id (double SHA-256 of the whole serialization, payload included).
    pub txid: Txid,
    /// The 16-bit transaction version (lower half of the version field), ≥ 3.
    pub version: u16,
    /// The DIP2 type (upper half of the version field): 1 ProRegTx, 2 ProUpServTx, 3 ProUpRegTx,
    /// 4 ProUpRevTx, 5 CbTx, 6 QcTx, ...; decode with [`super::dash::SpecialPayload::decode`].
    pub tx_type: u16,
    /// The payload bytes (without their compact-size length).
    pub payload: Vec<u8>,
}

/// What [`scan_block`] (or [`super::dash::scan_block`]) found in one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBlock {
    /// The decoded 80-byte header.
    pub header: Header,
    /// The block's hash: double SHA-256 of the header on Bitcoin, X11 on Dash (the
    /// rust-bitcoin type is used as a 32-byte hash with Bitcoin's display byte order).
    pub hash: bitcoin::BlockHash,
    /// Number of transactions, coinbase included.
    pub tx_count: u64,
    /// Number of outputs of all transactions.
    pub output_count: u64,
    /// Outputs paying a watched script, in block order.
    pub outputs: Vec<WatchedOutput>,
    /// DIP2 special transactions, in block order (Dash only; empty on Bitcoin).
    pub special_txs: Vec<SpecialTx>,
}

impl ScannedBlock {
    /// The follower's reference to this block: hashes as 64 hex digits in RPC byte order.
    /// The height is not in the header; the caller knows it.
    pub fn block_ref(&self, height: u64) -> BlockRef {
        BlockRef {
            height,
            hash: BlockHash::new(self.hash.to_string()),
            parent_hash: BlockHash::new(self.header.prev_blockhash.to_string()),
        }
    }
}

/// Scans a consensus-serialized Bitcoin block for outputs paying `watched` scripts.
///
/// The hash is the double SHA-256 of the 80-byte header. Errors: [`DecodeError`] when the
/// bytes are not one well-framed block (truncated, trailing bytes, bad segwit framing).
pub fn scan_block(raw: &[u8], watched: &ScriptSet) -> Result<ScannedBlock, DecodeError> {
    let mut scan = walk_block(raw, TxFormat::Bitcoin, watched, None)?;
    scan.hash = scan.header.block_hash();
    Ok(scan)
}

/// Every transaction id of a consensus-serialized block, in block order, hashed straight
/// from the block's bytes (non-witness serialization on Bitcoin, BIP141; whole serialization,
/// DIP2 payload included, on Dash). Checks the same framing as [`scan_block`]; with
/// `bitcoin::merkle_tree::calculate_root` it proves a body matches its header's merkle root.
pub fn block_txids(raw: &[u8], format: TxFormat) -> Result<Vec<Txid>, DecodeError> {
    let mut txids = Vec::new();
    walk_block(raw, format, &ScriptSet::new(), Some(&mut txids))?;
    Ok(txids)
}

/// Walks `raw` under `format`; the returned hash is the header's double SHA-256 (the
/// caller replaces it for chains that hash differently). With `txids`, every transaction is
/// hashed and its id pushed there.
pub(crate) fn walk_block(
    raw: &[u8],
    format: TxFormat,
    watched: &ScriptSet,
    mut txids: Option<&mut Vec<Txid>>,
) -> Result<ScannedBlock, DecodeError> {
    let mut cursor = Cursor { buf: raw, pos: 0 };
    let header_bytes = cursor.take(HEADER_LEN as u64)?;
    let header = Header::consensus_decode(&mut &header_bytes[..])
        .expect("80 bytes always decode as a header");
    let tx_count = cursor.compact_size()?;
    if tx_count == 0 {
        return Err(DecodeError::NoTransactions);
    }
    let mut scan = ScannedBlock {
        header,
        hash: header.block_hash(),
        tx_count,
        output_count: 0,
        outputs: Vec::new(),
        special_txs: Vec::new(),
    };
    for tx_index in 0..tx_count {
        let txid = walk_tx(
            &mut cursor,
            format,
            watched,
            tx_index,
            &mut scan,
            txids.is_some(),
        )?;
        if let Some(txids) = txids.as_deref_mut() {
            txids.push(txid.expect("walk_tx hashes every transaction when asked"));
        }
    }
    if cursor.pos != raw.len() {
        return Err(DecodeError::TrailingBytes {
            offset: cursor.pos,
            remaining: raw.len() - cursor.pos,
        });
    }
    Ok(scan)
}

/// Walks one transaction at the cursor, recording watched outputs and special transactions.
/// Returns its txid when it was computed: always with `want_txid`, otherwise only for a
/// transaction with a watched output or a special payload.
#[inline]
fn walk_tx(
    cursor: &mut Cursor<'_>,
    format: TxFormat,
    watched: &ScriptSet,
    tx_index: u64,
    scan: &mut ScannedBlock,
    want_txid: bool,
) -> Result<Option<Txid>, DecodeError> {
    let tx_start = cursor.pos;
    let version = cursor.u32_le()?;
    let mut input_count = cursor.compact_size()?;
    // Start of the inputs in the non-witness serialization (after version, or after the
    // marker and flag of a segwit transaction).
    let mut body_start = tx_start + 4;
    let segwit = format == TxFormat::Bitcoin && input_count == 0;
    if segwit {
        // BIP144: a zero input count is the marker; the flag must be 1.
        let flag = cursor.u8()?;
        if flag != 1 {
            return Err(DecodeError::UnsupportedSegwitFlag { tx_index, flag });
        }
        body_start = cursor.pos;
        input_count = cursor.compact_size()?;
    }
    for _ in 0..input_count {
        cursor.skip(36)?; // previous outpoint
        let script_len = cursor.compact_size()?;
        cursor.skip(script_len)?;
        cursor.skip(4)?; // sequence
    }

    let output_count = cursor.compact_size()?;
    let first_match = scan.outputs.len();
    for vout in 0..output_count {
        let value = cursor.u64_le()?;
        let script_len = cursor.compact_size()?;
        let script = cursor.take(script_len)?;
        if watched.contains(script) {
            scan.outputs.push(WatchedOutput {
                txid: Txid::all_zeros(), // filled in below, once the transaction's end is known
                vout: u32::try_from(vout).expect("fewer outputs than block bytes"),
                tx_index: u32::try_from(tx_index).expect("fewer transactions than block bytes"),
                script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
                amount: Amount::from_sat(value),
            });
        }
    }
    scan.output_count += output_count;
    let body_end = cursor.pos;

    if segwit {
        let mut any_witness = false;
        for _ in 0..input_count {
            let items = cursor.compact_size()?;
            any_witness |= items != 0;
            for _ in 0..items {
                let item_len = cursor.compact_size()?;
                cursor.skip(item_len)?;
            }
        }
        if !any_witness {
            return Err(DecodeError::SuperfluousWitness { tx_index });
        }
    }
    let lock_time_start = cursor.pos;
    cursor.skip(4)?;

    let mut payload = None;
    let (version_low, tx_type) = ((version & 0xffff) as u16, (version >> 16) as u16);
    if format == TxFormat::Dash && version_low >= 3 && tx_type != 0 {
        let payload_len = cursor.compact_size()?;
        payload = Some(cursor.take(payload_len)?);
    }
    let tx_end = cursor.pos;

    if scan.outputs.len() == first_match && payload.is_none() && !want_txid {
        return Ok(None); // nothing watched: no need for the txid
    }
    let raw = cursor.buf;
    let txid = if segwit {
        let mut engine = sha256d::Hash::engine();
        engine.input(&raw[tx_start..tx_start + 4]);
        engine.input(&raw[body_start..body_end]);
        engine.input(&raw[lock_time_start..lock_time_start + 4]);
        Txid::from_raw_hash(sha256d::Hash::from_engine(engine))
    } else {
        Txid::from_raw_hash(<sha256d::Hash as bitcoin::hashes::Hash>::hash(
            &raw[tx_start..tx_end],
        ))
    };
    for output in &mut scan.outputs[first_match..] {
        output.txid = txid;
    }
    if let Some(payload) = payload {
        scan.special_txs.push(SpecialTx {
            tx_index: u32::try_from(tx_index).expect("fewer transactions than block bytes"),
            txid,
            version: version_low,
            tx_type,
            payload: payload.to_vec(),
        });
    }
    Ok(Some(txid))
}

/// A bounds-checked reader over the raw block.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn truncated(&self, needed: u64) -> DecodeError {
        DecodeError::Truncated {
            offset: self.pos,
            needed,
            len: self.buf.len(),
        }
    }

    /// The next `len` bytes.
    #[inline]
    fn take(&mut self, len: u64) -> Result<&'a [u8], DecodeError> {
        let remaining = self.buf.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= remaining => {
                let bytes = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(bytes)
            }
            _ => Err(self.truncated(len)),
        }
    }

    #[inline]
    fn skip(&mut self, len: u64) -> Result<(), DecodeError> {
        self.take(len).map(|_| ())
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N as u64)?;
        Ok(bytes.try_into().expect("take returned N bytes"))
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline]
    fn u64_le(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A Bitcoin compact size ("VarInt"), which must be minimally encoded.
    #[inline]
    fn compact_size(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let (value, min) = match self.u8()? {
            0xfd => (u64::from(u16::from_le_bytes(self.array()?)), 0xfd),
            0xfe => (u64::from(u32::from_le_bytes(self.array()?)), 0x1_0000),
            0xff => (self.u64_le()?, 0x1_0000_0000),
            small => return Ok(u64::from(small)),
        };
        if value < min {
            return Err(DecodeError::NonMinimalCompactSize { offset: start });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p2wsh(byte: u8) -> Vec<u8> {
        let mut script = vec![0x00, 0x20];
        script.extend([byte; 32]);
        script
    }

    /// Proves template keys are exact: the same 32-byte payload under P2WSH and P2TR, a
    /// P2SH and a P2WPKH with one 20-byte payload, and non-template scripts are all
    /// distinguished. Steps: watch one of each pair, look up the other.
    #[test]
    fn keys_distinguish_templates_and_scripts() {
        let mut set = ScriptSet::new();
        let wsh = p2wsh(7);
        let mut tr = wsh.clone();
        tr[0] = 0x51;
        set.insert(&wsh);
        assert!(set.contains(&wsh));
        assert!(!set.contains(&tr));

        let mut p2sh = vec![0xa9, 0x14];
        p2sh.extend([9u8; 20]);
        p2sh.push(0x87);
        let mut wpkh = vec![0x00, 0x14];
        wpkh.extend([9u8; 20]);
        set.insert(&p2sh);
        assert!(set.contains(&p2sh));
        assert!(!set.contains(&wpkh));

        let bare = [0x51u8, 0x52, 0x93];
        assert!(!set.contains(&bare));
        assert!(set.insert(&bare));
        assert!(!set.insert(&bare));
        assert!(set.contains(&bare));
        assert!(!set.contains(&[0x51u8, 0x52]));
        assert_eq!(set.len(), 3);
        assert!(set.remove(&bare));
        assert!(!set.contains(&bare));
        assert_eq!(set.len(), 2);
    }

    /// Proves non-minimal compact sizes are rejected like consensus does: `fd fc 00` encodes
    /// 252, which fits in one byte.
    #[test]
    fn rejects_non_minimal_compact_size() {
        let mut raw = vec![0u8; HEADER_LEN];
        raw.extend([0xfd, 0xfc, 0x00]);
        let err = walk_block(&raw, TxFormat::Bitcoin, &ScriptSet::new(), None)
            .expect_err("must be rejected");
        assert_eq!(err, DecodeError::NonMinimalCompactSize { offset: 80 });
    }

    /// Proves a truncated block and a block with trailing bytes are errors, not panics.
    #[test]
    fn rejects_truncated_and_trailing() {
        // One legacy transaction: version, 1 input (null outpoint, empty script, sequence),
        // 1 output (value, 1-byte script), lock time.
        let mut raw = vec![0u8; HEADER_LEN];
        raw.push(1);
        raw.extend(1u32.to_le_bytes());
        raw.push(1);
        raw.extend([0u8; 36]);
        raw.push(0);
        raw.extend([0xffu8; 4]);
        raw.push(1);
        raw.extend(50u64.to_le_bytes());
        raw.extend([1, 0x51]);
        raw.extend([0u8; 4]);
        let set: ScriptSet = [[0x51u8]].into_iter().collect();
        let scan = walk_block(&raw, TxFormat::Bitcoin, &set, None).expect("well-formed block");
        assert_eq!(
            (scan.tx_count, scan.output_count, scan.outputs.len()),
            (1, 1, 1)
        );
        assert_eq!(scan.outputs[0].amount, Amount::from_sat(50));

        for cut in 81..raw.len() {
            let err = walk_block(&raw[..cut], TxFormat::Bitcoin, &set, None)
                .expect_err("must be rejected");
            assert!(matches!(err, DecodeError::Truncated { .. }), "{cut}: {err}");
        }
        let mut long = raw.clone();
        long.push(0);
        let err = walk_block(&long, TxFormat::Bitcoin, &set, None).expect_err("must be rejected");
        assert_eq!(
            err,
            DecodeError::TrailingBytes {
                offset: raw.len(),
                remaining: 1
            }
        );
    }
}
