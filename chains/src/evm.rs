//! EVM [`ChainSource`] over JSON-RPC (alloy).
//!
//! Native-coin deposits come from full blocks (`eth_getBlockByNumber` with transaction
//! objects): a transaction whose `to` is a watched address with `value > 0` and a successful
//! receipt (`status = 1`). ERC-20 deposits come from `Transfer(address,address,uint256)` logs
//! fetched by block hash (`eth_getLogs` with `blockHash`, EIP-234), so a log always belongs to
//! the block we connect. Transfers by contracts (internal transactions) need traces and are
//! not seen here.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy::consensus::Transaction as _;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address, B256, U256, b256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Block, Filter};
use alloy::transports::TransportResult;

use crate::block::{BlockHash, BlockRef, Recipient, Transfer};
use crate::follower::{BlockScan, ChainSource, SourceError};

/// `keccak256("Transfer(address,address,uint256)")`, topic 0 of ERC-20 (and ERC-721)
/// `Transfer` events.
pub const TRANSFER_TOPIC: B256 =
    b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// The set of deposit addresses a chain's watcher matches transfers against. Shared between
/// the source (reads) and the store that hands out addresses (writes).
#[derive(Debug, Default)]
pub struct Watchlist {
    addresses: RwLock<HashSet<Address>>,
}

impl Watchlist {
    /// Adds addresses; already-present ones are ignored.
    pub fn extend(&self, addresses: impl IntoIterator<Item = Address>) {
        self.addresses
            .write()
            .expect("watchlist lock poisoned")
            .extend(addresses);
    }

    /// Whether `address` is watched.
    pub fn contains(&self, address: &Address) -> bool {
        self.addresses
            .read()
            .expect("watchlist lock poisoned")
            .contains(address)
    }

    /// Number of watched addresses.
    pub fn len(&self) -> usize {
        self.addresses
            .read()
            .expect("watchlist lock poisoned")
            .len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The configured assets of one EVM chain.
#[derive(Debug, Clone, Default)]
pub struct EvmAssets {
    /// Symbol of the native coin (e.g. `"ETH"`), if deposits of it are accepted.
    pub native: Option<String>,
    /// ERC-20 contracts and their symbols.
    pub tokens: HashMap<Address, String>,
}

/// A JSON-RPC node (or several, tried in order) of one EVM chain.
pub struct EvmSource {
    endpoints: Vec<Endpoint>,
    active: AtomicUsize,
    timeout: Duration,
    assets: EvmAssets,
    watchlist: std::sync::Arc<Watchlist>,
}

struct Endpoint {
    /// Scheme, host and port only: URLs may carry API keys, which must not reach logs.
    label: String,
    provider: DynProvider,
}

impl EvmSource {
    /// Builds a source over `rpc_urls` (failover in order); each call times out after
    /// `timeout`.
    ///
    /// Errors: [`SourceError::BadReply`] naming a URL that does not parse.
    pub fn new(
        rpc_urls: &[String],
        timeout: Duration,
        assets: EvmAssets,
        watchlist: std::sync::Arc<Watchlist>,
    ) -> Result<Self, SourceError> {
        let mut endpoints = Vec::with_capacity(rpc_urls.len());
        for (position, url) in rpc_urls.iter().enumerate() {
            let parsed: alloy::transports::http::reqwest::Url = url.parse().map_err(|e| {
                SourceError::BadReply(format!("rpc_urls[{position}] is not a URL: {e}"))
            })?;
            let label = format!(
                "{}://{}:{}",
                parsed.scheme(),
                parsed.host_str().unwrap_or("?"),
                parsed.port_or_known_default().unwrap_or(0)
            );
            let provider = ProviderBuilder::new().connect_http(parsed).erased();
            endpoints.push(Endpoint { label, provider });
        }
        assert!(
            !endpoints.is_empty(),
            "config validation requires at least one rpc url"
        );
        Ok(Self {
            endpoints,
            active: AtomicUsize::new(0),
            timeout,
            assets,
            watchlist,
        })
    }

    /// The node's EIP-155 chain id (`eth_chainId`).
    pub async fn chain_id(&self) -> Result<u64, SourceError> {
        self.call("eth_chainId", |p| async move { p.get_chain_id().await })
            .await
    }

    /// Runs `request` on the active endpoint, failing over to the next ones in order.
    async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T, SourceError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let first = self.active.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for attempt in 0..self.endpoints.len() {
            let position = (first + attempt) % self.endpoints.len();
            let endpoint = &self.endpoints[position];
            match tokio::time::timeout(self.timeout, request(endpoint.provider.clone())).await {
                Ok(Ok(value)) => {
                    if position != first {
                        tracing::info!(endpoint = %endpoint.label, "switched to rpc endpoint");
                        self.active.store(position, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Ok(Err(error)) => last_error = format!("{what} on {}: {error}", endpoint.label),
                Err(_) => {
                    last_error = format!(
                        "{what} on {}: timed out after {:?}",
                        endpoint.label, self.timeout
                    )
                }
            }
            tracing::debug!(error = %last_error, "rpc call failed");
        }
        Err(SourceError::Unreachable(last_error))
    }

    async fn block(&self, height: u64, full: bool) -> Result<Option<Block>, SourceError> {
        let number = BlockNumberOrTag::Number(height);
        self.call("eth_getBlockByNumber", |p| async move {
            let request = p.get_block_by_number(number);
            if full {
                request.full().await
            } else {
                request.await
            }
        })
        .await
    }

    async fn native_transfers(
        &self,
        block: &Block,
        symbol: &str,
    ) -> Result<Vec<Transfer>, SourceError> {
        let mut transfers = Vec::new();
        for tx in block.transactions.txns() {
            let Some(to) = tx.to() else { continue };
            if tx.value().is_zero() || !self.watchlist.contains(&to) {
                continue;
            }
            let hash = tx.tx_hash();
            let receipt = self
                .call("eth_getTransactionReceipt", |p| async move {
                    p.get_transaction_receipt(hash).await
                })
                .await?
                .ok_or_else(|| SourceError::BadReply(format!("no receipt for {hash:#x}")))?;
            if !receipt.status() {
                continue; // reverted: no value moved
            }
            transfers.push(Transfer {
                txid: format!("{hash:#x}"),
                index: 0,
                recipient: Recipient::Address(to.to_checksum(None)),
                asset: symbol.to_owned(),
                amount: tx.value(),
            });
        }
        Ok(transfers)
    }

    async fn token_transfers(&self, block_hash: B256) -> Result<(Vec<Transfer>, u64), SourceError> {
        let filter = Filter::new()
            .at_block_hash(block_hash)
            .event_signature(TRANSFER_TOPIC);
        let logs = self.call("eth_getLogs", |p| {
            let filter = filter.clone();
            async move { p.get_logs(&filter).await }
        });
        let logs = logs.await?;
        let mut transfers = Vec::new();
        let mut unknown = 0;
        for log in logs {
            // ERC-721 `Transfer` has a third indexed topic and no data; skip it and any
            // malformed log.
            let topics = log.topics();
            if log.removed || topics.len() != 3 || log.data().data.len() != 32 {
                continue;
            }
            let to = Address::from_word(topics[2]);
            if !self.watchlist.contains(&to) {
                continue;
            }
            let contract = log.address();
            let Some(symbol) = self.assets.tokens.get(&contract) else {
                unknown += 1;
                tracing::info!(%contract, %to, "ignored transfer from a token that is no configured asset");
                continue;
            };
            let amount = U256::from_be_slice(&log.data().data);
            let (Some(txid), Some(index)) = (log.transaction_hash, log.log_index) else {
                return Err(SourceError::BadReply(
                    "log without transaction hash or index".into(),
                ));
            };
            if amount.is_zero() {
                continue; // zero-value transfers are address-poisoning spam, not deposits
            }
            let index = u32::try_from(index)
                .map_err(|_| SourceError::BadReply(format!("log index {index} too large")))?;
            transfers.push(Transfer {
                txid: format!("{txid:#x}"),
                index,
                recipient: Recipient::Address(to.to_checksum(None)),
                asset: symbol.clone(),
                amount,
            });
        }
        Ok((transfers, unknown))
    }
}

/// An EVM block's text hash: `0x` + 64 lower-case hex digits.
fn hash_text(hash: B256) -> BlockHash {
    BlockHash::new(format!("{hash:#x}"))
}

impl ChainSource for EvmSource {
    type Block = Block;

    async fn tip_height(&self) -> Result<u64, SourceError> {
        self.call(
            "eth_blockNumber",
            |p| async move { p.get_block_number().await },
        )
        .await
    }

    async fn hash_at(&self, height: u64) -> Result<Option<BlockHash>, SourceError> {
        Ok(self
            .block(height, false)
            .await?
            .map(|block| hash_text(block.header.hash)))
    }

    async fn block_at(&self, height: u64) -> Result<Option<Block>, SourceError> {
        self.block(height, true).await
    }

    fn block_ref(block: &Block) -> BlockRef {
        BlockRef {
            height: block.header.number,
            hash: hash_text(block.header.hash),
            parent_hash: hash_text(block.header.parent_hash),
        }
    }

    async fn scan(&self, block: &Block) -> Result<BlockScan, SourceError> {
        let mut scan = BlockScan::default();
        if self.watchlist.is_empty() {
            return Ok(scan);
        }
        if let Some(symbol) = &self.assets.native {
            scan.transfers = self.native_transfers(block, symbol).await?;
        }
        // Logs are fetched even with no token configured, to count (and report) transfers
        // of unconfigured tokens to our addresses.
        let (tokens, unknown) = self.token_transfers(block.header.hash).await?;
        scan.transfers.extend(tokens);
        scan.unknown_token_transfers = unknown;
        Ok(scan)
    }
}
