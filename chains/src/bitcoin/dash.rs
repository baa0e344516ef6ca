//! Dash specifics on top of the Bitcoin block walk: X11 block hashes and DIP2 special
//! transactions.
//!
//! - Block hash: X11 of the 80-byte header (not double SHA-256); transaction ids stay double
//!   SHA-256 of the whole serialization (Dash has no segwit).
//! - DIP2: a transaction whose 16-bit version is ≥ 3 and whose 16-bit type (upper half of the
//!   32-bit version field) is non-zero carries `compact_size(len) || payload` after
//!   `nLockTime`. [`scan_block`] skips it by its length, so ordinary outputs are found
//!   whatever the type; [`SpecialPayload::decode`] reads the payloads Coinhub knows
//!   (DIP3 provider transactions, DIP4 `CbTx`) field by field and checks that every byte is
//!   consumed.
//!
//! Amounts on Dash are in duffs (10⁻⁸ DASH), carried in [`bitcoin::Amount`].

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bitcoin::hashes::Hash as _;
use bitcoin::{OutPoint, ScriptBuf, Txid};

use super::block::{DecodeError, HEADER_LEN, ScannedBlock, ScriptSet, TxFormat, walk_block};

/// X11 hash of an 80-byte Dash block header, as a block hash (display order reversed, like
/// Bitcoin's).
pub fn block_hash(header: &[u8; HEADER_LEN]) -> bitcoin::BlockHash {
    // `get_x11_hash` reads exactly 80 bytes from the pointer it is given; the array type
    // guarantees they are there.
    bitcoin::BlockHash::from_byte_array(rs_x11_hash::get_x11_hash(header))
}

/// Scans a consensus-serialized Dash block for outputs paying `watched` scripts.
///
/// The result's `hash` is X11 of the header and `special_txs` lists every DIP2 special
/// transaction with its payload. Amounts are in duffs. Errors: [`DecodeError`] when the
/// bytes are not one well-framed block.
pub fn scan_block(raw: &[u8], watched: &ScriptSet) -> Result<ScannedBlock, DecodeError> {
    let mut scan = walk_block(raw, TxFormat::Dash, watched, None)?;
    let header: &[u8; HEADER_LEN] = raw[..HEADER_LEN]
        .try_into()
        .expect("walk_block read a full header");
    scan.hash = block_hash(header);
    Ok(scan)
}

/// DIP2 special transaction types (the upper 16 bits of the version field).
pub mod tx_type {
    /// Provider registration (DIP3).
    pub const PRO_REG_TX: u16 = 1;
    /// Provider update service (DIP3).
    pub const PRO_UP_SERV_TX: u16 = 2;
    /// Provider update registrar (DIP3).
    pub const PRO_UP_REG_TX: u16 = 3;
    /// Provider update revocation (DIP3).
    pub const PRO_UP_REV_TX: u16 = 4;
    /// Coinbase payload (DIP4).
    pub const CB_TX: u16 = 5;
    /// Quorum commitment (DIP6).
    pub const QC_TX: u16 = 6;
    /// Masternode hard-fork signal.
    pub const MN_HF_SIGNAL: u16 = 7;
    /// Asset lock (platform credit).
    pub const ASSET_LOCK: u16 = 8;
    /// Asset unlock (platform withdrawal).
    pub const ASSET_UNLOCK: u16 = 9;
}

/// Why a special-transaction payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload ended inside a field.
    #[error("type {tx_type} payload truncated at byte {offset}")]
    Truncated {
        /// The DIP2 type.
        tx_type: u16,
        /// Where the field starts in the payload.
        offset: usize,
    },
    /// Bytes remained after the last field: the layout is not the one this decoder knows.
    #[error("type {tx_type} payload has {remaining} bytes left after its last field")]
    TrailingBytes {
        /// The DIP2 type.
        tx_type: u16,
        /// Unread bytes.
        remaining: usize,
    },
    /// A payload version this decoder does not know.
    #[error("type {tx_type} payload version {version} is not supported")]
    UnsupportedVersion {
        /// The DIP2 type.
        tx_type: u16,
        /// The payload's version field.
        version: u16,
    },
    /// A compact size used more bytes than its value needs.
    #[error("type {tx_type} payload: non-minimal compact size at byte {offset}")]
    NonMinimalCompactSize {
        /// The DIP2 type.
        tx_type: u16,
        /// Where it starts in the payload.
        offset: usize,
    },
}

/// Masternode type of provider payloads version ≥ 2 (0 regular, 1 Evo / high-performance).
pub const MN_TYPE_EVO: u16 = 1;

/// Platform (Evo masternode) fields of ProRegTx / ProUpServTx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformInfo {
    /// Platform node id (20 bytes).
    pub node_id: [u8; 20],
    /// Platform P2P port.
    pub p2p_port: u16,
    /// Platform HTTP port.
    pub http_port: u16,
}

/// DIP4 coinbase payload (type 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbTx {
    /// Payload version (1, 2 or 3).
    pub version: u16,
    /// Height of the block holding this coinbase.
    pub height: u32,
    /// Merkle root of the masternode list.
    pub merkle_root_mn_list: [u8; 32],
    /// Merkle root of the active quorums (version ≥ 2).
    pub merkle_root_quorums: Option<[u8; 32]>,
    /// Blocks between this one and the best ChainLock'ed block (version ≥ 3).
    pub best_cl_height_diff: Option<u64>,
    /// BLS signature of that ChainLock (version ≥ 3, 96 bytes).
    pub best_cl_signature: Option<Box<[u8; 96]>>,
    /// Platform credit pool balance in duffs (version ≥ 3).
    pub credit_pool_balance_duffs: Option<i64>,
}

/// DIP3 provider registration payload (type 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProRegTx {
    /// Payload version (1 legacy BLS, 2 basic BLS).
    pub version: u16,
    /// Masternode type (0 regular, [`MN_TYPE_EVO`]).
    pub mn_type: u16,
    /// Masternode mode (0).
    pub mode: u16,
    /// The 1,000-DASH (or 4,000 for Evo) collateral output; null when it is in this tx.
    pub collateral: OutPoint,
    /// Service address (IPv4 addresses appear unmapped).
    pub service: SocketAddr,
    /// HASH160 of the owner's key.
    pub owner_key_id: [u8; 20],
    /// Operator BLS public key (48 bytes).
    pub operator_public_key: Box<[u8; 48]>,
    /// HASH160 of the voting key.
    pub voting_key_id: [u8; 20],
    /// Operator reward in hundredths of a percent (0..=10,000).
    pub operator_reward: u16,
    /// Where the masternode reward is paid.
    pub payout_script: ScriptBuf,
    /// Hash of the transaction's inputs (replay protection of the signature).
    pub inputs_hash: [u8; 32],
    /// Platform fields (Evo masternodes, version ≥ 2).
    pub platform: Option<PlatformInfo>,
    /// Collateral key's signature (may be empty when the collateral is in this tx).
    pub signature: Vec<u8>,
}

/// DIP3 provider update service payload (type 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProUpServTx {
    /// Payload version (1 legacy BLS, 2 basic BLS).
    pub version: u16,
    /// Masternode type (version ≥ 2; 0 for version 1).
    pub mn_type: u16,
    /// The masternode's ProRegTx id.
    pub pro_tx_hash: Txid,
    /// New service address.
    pub service: SocketAddr,
    /// Operator payout script (empty if none).
    pub operator_payout_script: ScriptBuf,
    /// Hash of the transaction's inputs.
    pub inputs_hash: [u8; 32],
    /// Platform fields (Evo masternodes, version ≥ 2).
    pub platform: Option<PlatformInfo>,
    /// Operator's BLS signature (96 bytes).
    pub signature: Box<[u8; 96]>,
}

/// DIP3 provider update registrar payload (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProUpRegTx {
    /// Payload version (1 legacy BLS, 2 basic BLS).
    pub version: u16,
    /// The masternode's ProRegTx id.
    pub pro_tx_hash: Txid,
    /// Masternode mode.
    pub mode: u16,
    /// New operator BLS public key (48 bytes).
    pub operator_public_key: Box<[u8; 48]>,
    /// New voting key id.
    pub voting_key_id: [u8; 20],
    /// New payout script.
    pub payout_script: ScriptBuf,
    /// Hash of the transaction's inputs.
    pub inputs_hash: [u8; 32],
    /// Owner's signature.
    pub signature: Vec<u8>,
}

/// DIP3 provider update revocation payload (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProUpRevTx {
    /// Payload version (1 legacy BLS, 2 basic BLS).
    pub version: u16,
    /// The masternode's ProRegTx id.
    pub pro_tx_hash: Txid,
    /// Revocation reason (0 unknown, 1 termination, 2 compromised keys, 3 change of keys).
    pub reason: u16,
    /// Hash of the transaction's inputs.
    pub inputs_hash: [u8; 32],
    /// Operator's BLS signature (96 bytes).
    pub signature: Box<[u8; 96]>,
}

/// A decoded DIP2 special-transaction payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecialPayload {
    /// Type 1 (DIP3).
    ProRegTx(ProRegTx),
    /// Type 2 (DIP3).
    ProUpServTx(ProUpServTx),
    /// Type 3 (DIP3).
    ProUpRegTx(ProUpRegTx),
    /// Type 4 (DIP3).
    ProUpRevTx(ProUpRevTx),
    /// Type 5 (DIP4).
    CbTx(CbTx),
    /// A type this decoder does not read field by field (quorum commitments, asset
    /// locks/unlocks, hard-fork signals, future types); the scanner still skipped it exactly by
    /// its length.
    Other {
        /// The DIP2 type.
        tx_type: u16,
    },
}

impl SpecialPayload {
    /// Decodes the payload of a special transaction of type `tx_type` (see [`tx_type`]).
    ///
    /// Errors: [`PayloadError`] if a known type's payload is truncated, has bytes left after
    /// its last field, or has an unknown version. Unknown types give [`SpecialPayload::Other`].
    pub fn decode(tx_type: u16, payload: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
            tx_type,
        };
        let decoded = match tx_type {
            tx_type::PRO_REG_TX => Self::ProRegTx(r.pro_reg_tx()?),
            tx_type::PRO_UP_SERV_TX => Self::ProUpServTx(r.pro_up_serv_tx()?),
            tx_type::PRO_UP_REG_TX => Self::ProUpRegTx(r.pro_up_reg_tx()?),
            tx_type::PRO_UP_REV_TX => Self::ProUpRevTx(r.pro_up_rev_tx()?),
            tx_type::CB_TX => Self::CbTx(r.cb_tx()?),
            _ => return Ok(Self::Other { tx_type }),
        };
        if r.pos != payload.len() {
            return Err(PayloadError::TrailingBytes {
                tx_type,
                remaining: payload.len() - r.pos,
            });
        }
        Ok(decoded)
    }
}

/// Provider payload versions: 1 legacy BLS scheme, 2 basic BLS scheme (Dash Core ≥ 19).
const PROVIDER_VERSIONS: std::ops::RangeInclusive<u16> = 1..=2;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    tx_type: u16,
}

impl Reader<'_> {
    fn bytes(&mut self, len: usize) -> Result<&[u8], PayloadError> {
        if self.buf.len() - self.pos < len {
            return Err(PayloadError::Truncated {
                tx_type: self.tx_type,
                offset: self.pos,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        Ok(self.bytes(N)?.try_into().expect("bytes returned N bytes"))
    }

    fn u16_le(&mut self) -> Result<u16, PayloadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32_le(&mut self) -> Result<u32, PayloadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn compact_size(&mut self) -> Result<u64, PayloadError> {
        let start = self.pos;
        let (value, min) = match self.array::<1>()?[0] {
            0xfd => (u64::from(u16::from_le_bytes(self.array()?)), 0xfd),
            0xfe => (u64::from(u32::from_le_bytes(self.array()?)), 0x1_0000),
            0xff => (u64::from_le_bytes(self.array()?), 0x1_0000_0000),
            small => return Ok(u64::from(small)),
        };
        if value < min {
            return Err(PayloadError::NonMinimalCompactSize {
                tx_type: self.tx_type,
                offset: start,
            });
        }
        Ok(value)
    }

    /// Compact-size length, then that many bytes.
    fn var_bytes(&mut self) -> Result<Vec<u8>, PayloadError> {
        let offset = self.pos;
        let len = self.compact_size()?;
        let len = usize::try_from(len).map_err(|_| PayloadError::Truncated {
            tx_type: self.tx_type,
            offset,
        })?;
        Ok(self.bytes(len)?.to_vec())
    }

    fn txid(&mut self) -> Result<Txid, PayloadError> {
        Ok(Txid::from_byte_array(self.array()?))
    }

    /// A `CService`: 16-byte IPv6 (IPv4-mapped for IPv4) and a big-endian port.
    fn service(&mut self) -> Result<SocketAddr, PayloadError> {
        let ip = Ipv6Addr::from(self.array::<16>()?);
        let port = u16::from_be_bytes(self.array()?);
        Ok(SocketAddr::new(IpAddr::V6(ip).to_canonical(), port))
    }

    fn platform(&mut self) -> Result<PlatformInfo, PayloadError> {
        Ok(PlatformInfo {
            node_id: self.array()?,
            p2p_port: self.u16_le()?,
            http_port: self.u16_le()?,
        })
    }

    fn provider_version(&mut self) -> Result<u16, PayloadError> {
        let version = self.u16_le()?;
        if !PROVIDER_VERSIONS.contains(&version) {
            return Err(PayloadError::UnsupportedVersion {
                tx_type: self.tx_type,
                version,
            });
        }
        Ok(version)
    }

    fn cb_tx(&mut self) -> Result<CbTx, PayloadError> {
        let version = self.u16_le()?;
        if !(1..=3).contains(&version) {
            return Err(PayloadError::UnsupportedVersion {
                tx_type: self.tx_type,
                version,
            });
        }
        let height = self.u32_le()?;
        let merkle_root_mn_list = self.array()?;
        let merkle_root_quorums = if version >= 2 {
            Some(self.array()?)
        } else {
            None
        };
        let (mut best_cl_height_diff, mut best_cl_signature, mut credit_pool_balance_duffs) =
            (None, None, None);
        if version >= 3 {
            best_cl_height_diff = Some(self.compact_size()?);
            best_cl_signature = Some(Box::new(self.array()?));
            credit_pool_balance_duffs = Some(i64::from_le_bytes(self.array()?));
        }
        Ok(CbTx {
            version,
            height,
            merkle_root_mn_list,
            merkle_root_quorums,
            best_cl_height_diff,
            best_cl_signature,
            credit_pool_balance_duffs,
        })
    }

    fn pro_reg_tx(&mut self) -> Result<ProRegTx, PayloadError> {
        let version = self.provider_version()?;
        let mn_type = self.u16_le()?;
        let mode = self.u16_le()?;
        let collateral = OutPoint {
            txid: self.txid()?,
            vout: self.u32_le()?,
        };
        let service = self.service()?;
        let owner_key_id = self.array()?;
        let operator_public_key = Box::new(self.array()?);
        let voting_key_id = self.array()?;
        let operator_reward = self.u16_le()?;
        let payout_script = ScriptBuf::from_bytes(self.var_bytes()?);
        let inputs_hash = self.array()?;
        let platform = if version >= 2 && mn_type == MN_TYPE_EVO {
            Some(self.platform()?)
        } else {
            None
        };
        let signature = self.var_bytes()?;
        Ok(ProRegTx {
            version,
            mn_type,
            mode,
            collateral,
            service,
            owner_key_id,
            operator_public_key,
            voting_key_id,
            operator_reward,
            payout_script,
            inputs_hash,
            platform,
            signature,
        })
    }

    fn pro_up_serv_tx(&mut self) -> Result<ProUpServTx, PayloadError> {
        let version = self.provider_version()?;
        let mn_type = if version >= 2 { self.u16_le()? } else { 0 };
        let pro_tx_hash = self.txid()?;
        let service = self.service()?;
        let operator_payout_script = ScriptBuf::from_bytes(self.var_bytes()?);
        let inputs_hash = self.array()?;
        let platform = if mn_type == MN_TYPE_EVO {
            Some(self.platform()?)
        } else {
            None
        };
        let signature = Box::new(self.array()?);
        Ok(ProUpServTx {
            version,
            mn_type,
            pro_tx_hash,
            service,
            operator_payout_script,
            inputs_hash,
            platform,
            signature,
        })
    }

    fn pro_up_reg_tx(&mut self) -> Result<ProUpRegTx, PayloadError> {
        Ok(ProUpRegTx {
            version: self.provider_version()?,
            pro_tx_hash: self.txid()?,
            mode: self.u16_le()?,
            operator_public_key: Box::new(self.array()?),
            voting_key_id: self.array()?,
            payout_script: ScriptBuf::from_bytes(self.var_bytes()?),
            inputs_hash: self.array()?,
            signature: self.var_bytes()?,
        })
    }

    fn pro_up_rev_tx(&mut self) -> Result<ProUpRevTx, PayloadError> {
        Ok(ProUpRevTx {
            version: self.provider_version()?,
            pro_tx_hash: self.txid()?,
            reason: self.u16_le()?,
            inputs_hash: self.array()?,
            signature: Box::new(self.array()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the X11 binding against the vector shipped with `rs-x11-hash` (a Dash testnet
    /// header): X11 of those 80 bytes, displayed in reversed byte order.
    #[test]
    fn x11_of_known_header() {
        let header: [u8; 80] = hex_literal(
            "020000002cc0081be5039a54b686d24d5d8747ee9770d9973ec1ace02e5c0500000000008d7139724b11c52995db4370284c998b9114154b120ad3486f1a360a1d4253d310d40e55b8f70a1be8e32300",
        )
        .try_into()
        .expect("80 bytes");
        assert_eq!(
            block_hash(&header).to_string(),
            "000000000007349ff88b97f3f54f13811194eb87696c28691607d86f280f9cf2"
        );
    }

    /// Proves a truncated payload and one with an extra byte are both rejected.
    #[test]
    fn payload_must_be_consumed_exactly() {
        // CbTx version 1: version, height, merkle root of the masternode list.
        let mut payload = 1u16.to_le_bytes().to_vec();
        payload.extend(7u32.to_le_bytes());
        payload.extend([3u8; 32]);
        let SpecialPayload::CbTx(cb) =
            SpecialPayload::decode(tx_type::CB_TX, &payload).expect("well-formed CbTx v1")
        else {
            panic!("not a CbTx");
        };
        assert_eq!(
            (cb.version, cb.height, cb.merkle_root_quorums),
            (1, 7, None)
        );
        assert!(matches!(
            SpecialPayload::decode(tx_type::CB_TX, &payload[..payload.len() - 1]),
            Err(PayloadError::Truncated { tx_type: 5, .. })
        ));
        payload.push(0);
        assert_eq!(
            SpecialPayload::decode(tx_type::CB_TX, &payload),
            Err(PayloadError::TrailingBytes {
                tx_type: 5,
                remaining: 1
            })
        );
    }

    fn hex_literal(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }
}
