//! Chain-agnostic block references and detected transfers.

use std::fmt;

use alloy::primitives::U256;

/// A block hash in its chain's usual text form (EVM: `0x` + 64 lower-case hex digits;
/// Bitcoin: 64 hex digits in RPC byte order). Compared as text, so each chain's source must
/// always write the same form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(String);

impl BlockHash {
    /// Wraps a hash already in its chain's canonical text form.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.0)
    }
}

/// A block's place in its chain: enough to detect a fork by hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Height (block number); the genesis block is 0.
    pub height: u64,
    /// This block's hash.
    pub hash: BlockHash,
    /// The previous block's hash.
    pub parent_hash: BlockHash,
}

/// The receiver of a [`Transfer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// An address as the chain writes it (EIP-55 for EVM).
    Address(String),
    /// A scriptPubKey (Bitcoin, Dash): the block says which script was paid, and the
    /// address text is whatever our wallet handed out for that script.
    Script(Vec<u8>),
}

/// One transfer to a watched address found in a block: a future deposit.
///
/// Identified by `(txid, index)` within a chain; see [`Transfer::index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Transaction id in the chain's text form (EVM: `0x` + 64 lower-case hex digits).
    pub txid: String,
    /// Which transfer of the transaction: an ERC-20 log's index in its block, 0 for a native
    /// EVM transfer, the output index (vout) on UTXO chains.
    pub index: u32,
    /// Who receives it: a deposit address (EVM) or a scriptPubKey (UTXO chains, whose
    /// address text the store looks up).
    pub recipient: Recipient,
    /// Configured asset symbol, e.g. `"ETH"`.
    pub asset: String,
    /// Amount in the asset's base units (wei, token units, satoshi).
    pub amount: U256,
}
