//! Following a node's best chain with reorg handling — one implementation for every chain.
//!
//! Like LDK's `Listen::{block_connected, blocks_disconnected}` and reth's
//! `Stage::{execute, unwind}`: the follower compares the node's chain with the blocks it has
//! stored, connects new blocks one at a time (each checked against its parent hash), and when
//! the node has switched branch it walks back by hash to the fork point, disconnects
//! everything above it and connects the new branch. The store persists each step atomically
//! (block, deposits and events in one transaction), so a crash resumes from the stored tip
//! without missing or repeating a block.

use std::future::Future;

use crate::block::{BlockHash, BlockRef, Transfer};

/// A node failure: unreachable, timed out, or an answer we cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// No endpoint answered (connection refused, timeout, HTTP error).
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The node answered something inconsistent (missing field, wrong chain id).
    #[error("unexpected node reply: {0}")]
    BadReply(String),
}

/// A persistence failure; the step it belonged to was not applied.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub Box<dyn std::error::Error + Send + Sync>);

/// Why [`poll`] stopped early. Nothing is half-applied: every connected block was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The node failed; retry later.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The database failed; retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// None of the stored blocks is on the node's best chain any more: the reorg is deeper
    /// than `reorg_depth_max`. An operator must look (the node may be on a wrong chain).
    #[error(
        "reorg deeper than reorg_depth_max ({reorg_depth_max}): none of the stored blocks down \
         to height {lowest_stored_height} is on the node's best chain"
    )]
    ReorgTooDeep {
        /// The configured depth.
        reorg_depth_max: u32,
        /// The lowest height we still had a hash for.
        lowest_stored_height: u64,
    },
}

/// A node of one chain, as the follower needs it.
pub trait ChainSource: Send + Sync {
    /// A fetched block (header and body), ready to [`ChainSource::scan`].
    type Block: Send + Sync;

    /// Height of the node's best block.
    fn tip_height(&self) -> impl Future<Output = Result<u64, SourceError>> + Send;

    /// Hash of the best chain's block at `height`, `None` above the node's tip.
    fn hash_at(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<Option<BlockHash>, SourceError>> + Send;

    /// The best chain's block at `height` with its body, `None` above the node's tip.
    fn block_at(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<Option<Self::Block>, SourceError>> + Send;

    /// The block's reference.
    fn block_ref(block: &Self::Block) -> BlockRef;

    /// Transfers in `block` to the addresses watched now, and how many token transfers to
    /// watched addresses came from contracts that are no configured asset (ignored).
    fn scan(
        &self,
        block: &Self::Block,
    ) -> impl Future<Output = Result<BlockScan, SourceError>> + Send;
}

/// What [`ChainSource::scan`] found in one block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockScan {
    /// Transfers of configured assets to watched addresses.
    pub transfers: Vec<Transfer>,
    /// Token transfers to watched addresses from unconfigured contracts (ignored, counted).
    pub unknown_token_transfers: u64,
}

/// Where the follower keeps its progress. Each method is one atomic step.
pub trait FollowerStore: Send + Sync {
    /// The highest stored block, `None` on a fresh database.
    fn tip(&self) -> impl Future<Output = Result<Option<BlockRef>, StoreError>> + Send;

    /// Up to `limit` stored blocks, highest first.
    fn recent_blocks(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<BlockRef>, StoreError>> + Send;

    /// Brings the set of watched addresses up to date. Called after a block is fetched and
    /// before it is scanned, so an address handed out before the block existed is watched.
    fn refresh_watchlist(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores `block` as the new tip with the deposits in `transfers`, and advances the
    /// confirmations of earlier deposits; all in one transaction.
    fn connect_block(
        &self,
        block: &BlockRef,
        transfers: &[Transfer],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes every stored block above `fork_height` and orphans their deposits; one
    /// transaction.
    fn disconnect_above(
        &self,
        fork_height: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Limits of one chain's follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerConfig {
    /// How many stored blocks are searched for a fork point.
    pub reorg_depth_max: u32,
    /// Most blocks connected by one [`poll`].
    pub blocks_per_poll_max: u32,
    /// First height to connect on a fresh store; `None`: the node's tip at that moment.
    pub start_height: Option<u64>,
}

/// What one [`poll`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// The node's tip height when the poll started.
    pub node_height: u64,
    /// Our tip after the poll (`None` if nothing is stored yet).
    pub scanned_height: Option<u64>,
    /// Blocks connected.
    pub blocks_connected: u64,
    /// Transfers found in them.
    pub transfers_found: u64,
    /// Unconfigured token transfers to watched addresses seen in them.
    pub unknown_token_transfers: u64,
    /// Fork points unwound to, in order.
    pub reorgs: Vec<Reorg>,
}

/// One unwind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorg {
    /// The highest block both chains share.
    pub fork_height: u64,
    /// Our tip height before the unwind.
    pub old_tip_height: u64,
}

/// Brings `store` up to the node's best chain, connecting at most
/// `config.blocks_per_poll_max` blocks.
///
/// Errors: see [`FollowError`]; whatever was connected before the error stays stored.
pub async fn poll<S: ChainSource, T: FollowerStore>(
    source: &S,
    store: &T,
    config: &FollowerConfig,
) -> Result<PollReport, FollowError> {
    let node_height = source.tip_height().await?;
    let mut report = PollReport {
        node_height,
        ..PollReport::default()
    };
    let mut local = store.tip().await?;

    // Our tip must still be on the best chain; if not, the node reorged while we slept.
    if let Some(tip) = &local
        && source.hash_at(tip.height).await?.as_ref() != Some(&tip.hash)
    {
        local = unwind(source, store, config, tip, &mut report).await?;
    }

    let mut next = match &local {
        Some(tip) => tip.height + 1,
        None => config.start_height.unwrap_or(node_height),
    };
    // Bounds the loop even if the node flaps between branches on every call.
    let mut steps_left = u64::from(config.blocks_per_poll_max) * 2 + 2;
    while next <= node_height && report.blocks_connected < u64::from(config.blocks_per_poll_max) {
        steps_left -= 1;
        if steps_left == 0 {
            break;
        }
        let Some(block) = source.block_at(next).await? else {
            break; // the node's tip moved back; the next poll sorts it out
        };
        let block_ref = S::block_ref(&block);
        assert_eq!(
            block_ref.height, next,
            "source returned block at wrong height"
        );
        if let Some(tip) = &local
            && block_ref.parent_hash != tip.hash
        {
            // The node switched branch between our calls.
            local = unwind(source, store, config, tip, &mut report).await?;
            next = local.as_ref().map_or(next, |tip| tip.height + 1);
            continue;
        }
        store.refresh_watchlist().await?;
        let scan = source.scan(&block).await?;
        store.connect_block(&block_ref, &scan.transfers).await?;
        report.blocks_connected += 1;
        report.transfers_found += scan.transfers.len() as u64;
        report.unknown_token_transfers += scan.unknown_token_transfers;
        local = Some(block_ref);
        next += 1;
    }
    report.scanned_height = local.map(|tip| tip.height);
    Ok(report)
}

/// Finds the highest stored block that is still on the node's best chain, disconnects
/// everything above it, and returns it as the new local tip.
async fn unwind<S: ChainSource, T: FollowerStore>(
    source: &S,
    store: &T,
    config: &FollowerConfig,
    old_tip: &BlockRef,
    report: &mut PollReport,
) -> Result<Option<BlockRef>, FollowError> {
    let stored = store
        .recent_blocks(config.reorg_depth_max.saturating_add(1))
        .await?;
    for block in &stored {
        if source.hash_at(block.height).await?.as_ref() == Some(&block.hash) {
            tracing::warn!(
                fork_height = block.height,
                old_tip_height = old_tip.height,
                depth = old_tip.height - block.height,
                "reorg: unwinding to fork point"
            );
            store.disconnect_above(block.height).await?;
            report.reorgs.push(Reorg {
                fork_height: block.height,
                old_tip_height: old_tip.height,
            });
            return Ok(Some(block.clone()));
        }
    }
    Err(FollowError::ReorgTooDeep {
        reorg_depth_max: config.reorg_depth_max,
        lowest_stored_height: stored.last().map_or(old_tip.height, |block| block.height),
    })
}

#[cfg(test)]
mod tests;
