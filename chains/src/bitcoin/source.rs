//! The Bitcoin / Dash [`ChainSource`]: blocks by height from a Bitcoin Core or Dash Core
//! node ([`BitcoinRpc`]: `getblockcount`, `getblockhash`, REST `/rest/block/<hash>.bin` or
//! `getblock <hash> 0`), scanned raw against the watched scriptPubKeys ([`ScriptSet`]).

use std::sync::{Arc, RwLock};

use crate::bitcoin::block::{self, HEADER_LEN, ScannedBlock, ScriptSet};
use crate::bitcoin::dash;
use crate::bitcoin::rpc::{BitcoinRpc, RpcError};
use crate::block::{BlockHash, BlockRef};
use crate::follower::{BlockScan, ChainSource, SourceError};

/// Which serialization and block hash the node's chain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UtxoFlavor {
    /// Bitcoin: BIP141 witnesses, double-SHA-256 block hashes.
    Bitcoin,
    /// Dash: no segwit, DIP2 special-transaction payloads, X11 block hashes.
    Dash,
}

/// The scriptPubKeys a UTXO watcher matches outputs against; shared between the source
/// (reads while scanning) and the store (adds deposit addresses as they are handed out).
#[derive(Debug, Default)]
pub struct ScriptWatchlist {
    scripts: RwLock<ScriptSet>,
}

impl ScriptWatchlist {
    /// Adds scriptPubKeys; present ones are ignored.
    pub fn extend<S: AsRef<[u8]>>(&self, scripts: impl IntoIterator<Item = S>) {
        self.scripts
            .write()
            .expect("watchlist lock poisoned")
            .extend(scripts);
    }

    /// Number of watched scripts.
    pub fn len(&self) -> usize {
        self.scripts.read().expect("watchlist lock poisoned").len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `script` is watched.
    pub fn contains(&self, script: &[u8]) -> bool {
        self.scripts
            .read()
            .expect("watchlist lock poisoned")
            .contains(script)
    }
}

/// A fetched block: its reference and consensus-serialized bytes.
#[derive(Debug, Clone)]
pub struct RawBlock {
    /// Height, hash (as the node names it) and parent hash.
    pub block: BlockRef,
    /// The block as `/rest/block/<hash>.bin` returns it.
    pub raw: Vec<u8>,
}

/// A Bitcoin Core or Dash Core node, as the follower sees it.
pub struct UtxoSource {
    rpc: BitcoinRpc,
    flavor: UtxoFlavor,
    asset: String,
    watchlist: Arc<ScriptWatchlist>,
}

impl UtxoSource {
    /// A source over `rpc` for `flavor`'s chain; deposits are reported as `asset` (the
    /// configured symbol, e.g. `"BTC"`), matched against `watchlist`.
    pub fn new(
        rpc: BitcoinRpc,
        flavor: UtxoFlavor,
        asset: String,
        watchlist: Arc<ScriptWatchlist>,
    ) -> Self {
        Self {
            rpc,
            flavor,
            asset,
            watchlist,
        }
    }

    /// The node's chain name from `getblockchaininfo` (`main`, `test`, `regtest`, ...).
    pub async fn chain_name(&self) -> Result<String, SourceError> {
        Ok(self
            .rpc
            .get_blockchain_info()
            .await
            .map_err(source_error)?
            .chain)
    }

    /// The previous block's hash and this block's hash (double SHA-256, or X11 on Dash) from
    /// the 80-byte header at the start of `raw`.
    fn header_hashes(
        &self,
        raw: &[u8],
    ) -> Result<(bitcoin::BlockHash, bitcoin::BlockHash), SourceError> {
        let bytes: &[u8; HEADER_LEN] = raw
            .get(..HEADER_LEN)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| SourceError::BadReply("block shorter than its 80-byte header".into()))?;
        let header: bitcoin::block::Header = bitcoin::consensus::deserialize(bytes)
            .map_err(|e| SourceError::BadReply(format!("undecodable block header: {e}")))?;
        let hash = match self.flavor {
            UtxoFlavor::Bitcoin => header.block_hash(),
            UtxoFlavor::Dash => dash::block_hash(bytes),
        };
        Ok((header.prev_blockhash, hash))
    }

    fn scan_raw(&self, raw: &[u8]) -> Result<ScannedBlock, SourceError> {
        let scripts = self
            .watchlist
            .scripts
            .read()
            .expect("watchlist lock poisoned");
        let scanned = match self.flavor {
            UtxoFlavor::Bitcoin => block::scan_block(raw, &scripts),
            UtxoFlavor::Dash => dash::scan_block(raw, &scripts),
        };
        scanned.map_err(|e| SourceError::BadReply(format!("undecodable block: {e}")))
    }
}

/// Node down, timing out or warming up is retried; anything else is a bad reply.
fn source_error(error: RpcError) -> SourceError {
    if error.is_transient() {
        SourceError::Unreachable(error.to_string())
    } else {
        SourceError::BadReply(error.to_string())
    }
}

impl ChainSource for UtxoSource {
    type Block = RawBlock;

    async fn tip_height(&self) -> Result<u64, SourceError> {
        self.rpc.get_block_count().await.map_err(source_error)
    }

    async fn hash_at(&self, height: u64) -> Result<Option<BlockHash>, SourceError> {
        match self.rpc.get_block_hash(height).await {
            Ok(hash) => Ok(Some(BlockHash::new(hash.to_string()))),
            // -8 "Block height out of range": above the node's tip.
            Err(RpcError::InvalidParameter { .. }) => Ok(None),
            Err(error) => Err(source_error(error)),
        }
    }

    async fn block_at(&self, height: u64) -> Result<Option<RawBlock>, SourceError> {
        let hash = match self.rpc.get_block_hash(height).await {
            Ok(hash) => hash,
            Err(RpcError::InvalidParameter { .. }) => return Ok(None),
            Err(error) => return Err(source_error(error)),
        };
        let raw = match self.rpc.get_block_raw(&hash).await {
            Ok(raw) => raw,
            // Reorged away between the two calls: the next poll sees the new branch.
            Err(RpcError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(source_error(error)),
        };
        // Hashing the header checks the bytes belong to the hash the node named; the body
        // is scanned once, later, by `scan`.
        let (prev_hash, header_hash) = self.header_hashes(&raw)?;
        if header_hash != hash {
            return Err(SourceError::BadReply(format!(
                "block at height {height}: node named {hash}, the bytes hash to {header_hash}"
            )));
        }
        let block = BlockRef {
            height,
            hash: BlockHash::new(hash.to_string()),
            parent_hash: BlockHash::new(prev_hash.to_string()),
        };
        Ok(Some(RawBlock { block, raw }))
    }

    fn block_ref(block: &RawBlock) -> BlockRef {
        block.block.clone()
    }

    async fn scan(&self, block: &RawBlock) -> Result<BlockScan, SourceError> {
        let scanned = self.scan_raw(&block.raw)?;
        let transfers = scanned
            .outputs
            .iter()
            .filter(|output| output.amount.to_sat() > 0)
            .map(|output| output.to_transfer(self.asset.clone()))
            .collect();
        Ok(BlockScan {
            transfers,
            unknown_token_transfers: 0,
        })
    }
}
