//! The follower against an in-memory node and store: reorgs of every depth, branch switches
//! back and forth, and the invariant that after polling the store mirrors the node's best
//! chain and every deposit's status follows its block.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use alloy::primitives::U256;
use proptest::prelude::*;

use super::*;

#[derive(Clone)]
struct FakeBlock {
    block: BlockRef,
    transfers: Vec<Transfer>,
}

/// A node whose best chain can be replaced at will.
struct FakeNode {
    chain: Mutex<Vec<FakeBlock>>,
    next_branch: Mutex<u64>,
}

fn transfer(txid: &str) -> Transfer {
    Transfer {
        txid: txid.to_owned(),
        index: 0,
        recipient: crate::Recipient::Address("0xabc".to_owned()),
        asset: "ETH".to_owned(),
        amount: U256::from(1u8),
    }
}

impl FakeNode {
    fn new() -> Self {
        let genesis = BlockRef {
            height: 0,
            hash: BlockHash::new("b0-0"),
            parent_hash: BlockHash::new("none"),
        };
        Self {
            chain: Mutex::new(vec![FakeBlock {
                block: genesis,
                transfers: vec![],
            }]),
            next_branch: Mutex::new(1),
        }
    }

    fn branch_id(&self) -> u64 {
        let mut next = self.next_branch.lock().expect("lock");
        *next += 1;
        *next
    }

    /// Mines one block on the best chain with the given transaction ids.
    fn mine(&self, branch: u64, txids: &[String]) {
        let hash_suffix = self.branch_id();
        let mut chain = self.chain.lock().expect("lock");
        let parent = chain.last().expect("genesis").block.clone();
        let height = parent.height + 1;
        chain.push(FakeBlock {
            block: BlockRef {
                height,
                // Unique per mined block: a re-mined height must never reuse a hash.
                hash: BlockHash::new(format!("b{branch}-{height}-{hash_suffix}")),
                parent_hash: parent.hash,
            },
            transfers: txids.iter().map(|txid| transfer(txid)).collect(),
        });
    }

    /// Drops the top `depth` blocks and mines `txids.len()` new ones, one transaction each.
    fn reorg(&self, depth: usize, txids: &[String]) -> Vec<FakeBlock> {
        let dropped = {
            let mut chain = self.chain.lock().expect("lock");
            let keep = chain.len().saturating_sub(depth).max(1);
            chain.split_off(keep)
        };
        let branch = self.branch_id();
        for txid in txids {
            self.mine(branch, std::slice::from_ref(txid));
        }
        dropped
    }

    /// Replaces everything above `fork_height` with `blocks` (switching back to a branch).
    fn switch_to(&self, fork_height: u64, blocks: Vec<FakeBlock>) {
        let mut chain = self.chain.lock().expect("lock");
        chain.truncate(fork_height as usize + 1);
        chain.extend(blocks);
    }

    fn best(&self) -> Vec<FakeBlock> {
        self.chain.lock().expect("lock").clone()
    }
}

impl ChainSource for FakeNode {
    type Block = FakeBlock;

    async fn tip_height(&self) -> Result<u64, SourceError> {
        Ok(self.chain.lock().expect("lock").len() as u64 - 1)
    }

    async fn hash_at(&self, height: u64) -> Result<Option<BlockHash>, SourceError> {
        let chain = self.chain.lock().expect("lock");
        Ok(chain.get(height as usize).map(|b| b.block.hash.clone()))
    }

    async fn block_at(&self, height: u64) -> Result<Option<FakeBlock>, SourceError> {
        Ok(self
            .chain
            .lock()
            .expect("lock")
            .get(height as usize)
            .cloned())
    }

    fn block_ref(block: &FakeBlock) -> BlockRef {
        block.block.clone()
    }

    async fn scan(&self, block: &FakeBlock) -> Result<BlockScan, SourceError> {
        Ok(BlockScan {
            transfers: block.transfers.clone(),
            unknown_token_transfers: 0,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Detected { height: u64 },
    Orphaned,
}

#[derive(Default)]
struct FakeStore {
    blocks: Mutex<BTreeMap<u64, BlockRef>>,
    deposits: Mutex<HashMap<String, Status>>,
}

impl FollowerStore for FakeStore {
    async fn tip(&self) -> Result<Option<BlockRef>, StoreError> {
        Ok(self
            .blocks
            .lock()
            .expect("lock")
            .values()
            .next_back()
            .cloned())
    }

    async fn recent_blocks(&self, limit: u32) -> Result<Vec<BlockRef>, StoreError> {
        let blocks = self.blocks.lock().expect("lock");
        Ok(blocks
            .values()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn refresh_watchlist(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn connect_block(
        &self,
        block: &BlockRef,
        transfers: &[Transfer],
    ) -> Result<(), StoreError> {
        let mut blocks = self.blocks.lock().expect("lock");
        if let Some((_, tip)) = blocks.iter().next_back() {
            assert_eq!(
                tip.hash, block.parent_hash,
                "connected a block that does not extend the tip"
            );
        }
        blocks.insert(block.height, block.clone());
        let mut deposits = self.deposits.lock().expect("lock");
        for transfer in transfers {
            deposits.insert(
                transfer.txid.clone(),
                Status::Detected {
                    height: block.height,
                },
            );
        }
        Ok(())
    }

    async fn disconnect_above(&self, fork_height: u64) -> Result<(), StoreError> {
        self.blocks
            .lock()
            .expect("lock")
            .retain(|height, _| *height <= fork_height);
        for status in self.deposits.lock().expect("lock").values_mut() {
            if matches!(status, Status::Detected { height } if *height > fork_height) {
                *status = Status::Orphaned;
            }
        }
        Ok(())
    }
}

const CONFIG: FollowerConfig = FollowerConfig {
    reorg_depth_max: 16,
    blocks_per_poll_max: 4,
    start_height: Some(0),
};

async fn poll_until_synced(node: &FakeNode, store: &FakeStore) -> Vec<Reorg> {
    let mut reorgs = Vec::new();
    for _ in 0..100 {
        let report = poll(node, store, &CONFIG).await.expect("poll");
        reorgs.extend(report.reorgs);
        if report.scanned_height == Some(report.node_height) && report.blocks_connected == 0 {
            return reorgs;
        }
    }
    panic!("follower did not converge");
}

/// Asserts that the store's blocks are exactly the node's best chain and that every
/// deposit is detected at its height if its transaction is on the best chain, else orphaned.
fn assert_mirrors(node: &FakeNode, store: &FakeStore) {
    let best = node.best();
    let stored: Vec<BlockRef> = store
        .blocks
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    let expected: Vec<BlockRef> = best.iter().map(|b| b.block.clone()).collect();
    assert_eq!(stored, expected);
    let on_chain: HashMap<String, u64> = best
        .iter()
        .flat_map(|b| {
            b.transfers
                .iter()
                .map(move |t| (t.txid.clone(), b.block.height))
        })
        .collect();
    for (txid, status) in store.deposits.lock().expect("lock").iter() {
        match on_chain.get(txid) {
            Some(height) => assert_eq!(status, &Status::Detected { height: *height }, "{txid}"),
            None => assert_eq!(status, &Status::Orphaned, "{txid}"),
        }
    }
    for txid in on_chain.keys() {
        assert!(
            store.deposits.lock().expect("lock").contains_key(txid),
            "missed {txid}"
        );
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A reorg that removes a deposit's block orphans the deposit; re-mining the same transaction
/// on the new branch brings it back at its new height; switching back to the first branch
/// restores the first state exactly.
#[test]
fn reorg_orphans_then_reverse_restores() {
    block_on(async {
        let node = FakeNode::new();
        let store = FakeStore::default();
        node.mine(1, &["tx-a".to_owned()]);
        node.mine(1, &["tx-b".to_owned()]);
        node.mine(1, &[]);
        poll_until_synced(&node, &store).await;
        assert_mirrors(&node, &store);

        let old_branch = node.reorg(2, &["tx-c".to_owned()]);
        let reorgs = poll_until_synced(&node, &store).await;
        assert_eq!(
            reorgs,
            vec![Reorg {
                fork_height: 1,
                old_tip_height: 3
            }]
        );
        assert_eq!(
            store.deposits.lock().expect("lock")["tx-b"],
            Status::Orphaned
        );
        assert_mirrors(&node, &store);

        node.switch_to(1, old_branch);
        poll_until_synced(&node, &store).await;
        assert_eq!(
            store.deposits.lock().expect("lock")["tx-b"],
            Status::Detected { height: 2 }
        );
        assert_eq!(
            store.deposits.lock().expect("lock")["tx-c"],
            Status::Orphaned
        );
        assert_mirrors(&node, &store);
    });
}

/// A reorg deeper than `reorg_depth_max` stops the follower with `ReorgTooDeep` and changes
/// nothing.
#[test]
fn too_deep_reorg_is_refused() {
    block_on(async {
        let node = FakeNode::new();
        let store = FakeStore::default();
        let config = FollowerConfig {
            reorg_depth_max: 2,
            blocks_per_poll_max: 100,
            start_height: Some(0),
        };
        for _ in 0..5 {
            node.mine(1, &[]);
        }
        poll(&node, &store, &config).await.expect("initial sync");
        node.reorg(
            4,
            &[
                "x".to_owned(),
                "y".to_owned(),
                "z".to_owned(),
                "w".to_owned(),
            ],
        );
        let error = poll(&node, &store, &config).await.expect_err("must refuse");
        assert!(
            matches!(
                error,
                FollowError::ReorgTooDeep {
                    reorg_depth_max: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            store.blocks.lock().expect("lock").len(),
            6,
            "nothing was disconnected"
        );
    });
}

#[derive(Debug, Clone)]
enum Op {
    Mine(u8),
    Reorg { depth: u8, new_blocks: u8 },
    SwitchBack,
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3).prop_map(Op::Mine),
        2 => (1u8..6, 0u8..7).prop_map(|(depth, new_blocks)| Op::Reorg { depth, new_blocks }),
        1 => Just(Op::SwitchBack),
        3 => Just(Op::Poll),
    ]
}

proptest! {
    /// For any interleaving of mining, reorgs (including switching back to an abandoned
    /// branch) and polls, the store ends up mirroring the node's best chain, and every
    /// deposit is detected exactly when its block is on that chain.
    #[test]
    fn store_mirrors_best_chain(ops in proptest::collection::vec(op(), 1..40)) {
        block_on(async {
            let node = FakeNode::new();
            let store = FakeStore::default();
            let mut txid_counter = 0u32;
            let mut abandoned: Option<(u64, Vec<FakeBlock>)> = None;
            let main_branch = node.branch_id();
            for op in ops {
                match op {
                    Op::Mine(count) => {
                        let txids: Vec<String> = (0..count).map(|_| {
                            txid_counter += 1;
                            format!("tx{txid_counter}")
                        }).collect();
                        node.mine(main_branch, &txids);
                    }
                    Op::Reorg { depth, new_blocks } => {
                        let fork = (node.best().len() as u64 - 1).saturating_sub(u64::from(depth));
                        let txids: Vec<String> = (0..new_blocks).map(|_| {
                            txid_counter += 1;
                            format!("tx{txid_counter}")
                        }).collect();
                        let dropped = node.reorg(usize::from(depth), &txids);
                        abandoned = Some((fork, dropped));
                    }
                    Op::SwitchBack => {
                        // Only switches a follower must survive: unwinding at most
                        // `reorg_depth_max` blocks (deeper ones stop it with `ReorgTooDeep`,
                        // tested on their own). Mining after the reorg can push the fork
                        // deeper than that.
                        let tip = node.best().len() as u64 - 1;
                        if let Some((fork, blocks)) = abandoned.take()
                            && fork < tip
                            && tip - fork <= u64::from(CONFIG.reorg_depth_max) {
                                node.switch_to(fork, blocks);
                            }
                    }
                    Op::Poll => {
                        poll(&node, &store, &CONFIG).await.expect("poll");
                    }
                }
            }
            poll_until_synced(&node, &store).await;
            assert_mirrors(&node, &store);
        });
    }
}
