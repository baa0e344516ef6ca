//! Live status of each chain watcher, shown by `GET /v1/status` and `coinhub status`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

/// One chain's watcher as of its last poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainStatus {
    /// Configured chain name.
    pub chain: String,
    /// The node's best height at the last successful call, if any.
    pub node_height: Option<u64>,
    /// Highest block connected.
    pub scanned_height: Option<u64>,
    /// Whether the last poll reached the node.
    pub node_reachable: bool,
    /// Blocks the watcher is behind the node.
    pub lag_blocks: Option<u64>,
    /// The last poll's error, cleared by a successful poll.
    pub last_error: Option<String>,
    /// When the last poll finished (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_poll_at: Option<OffsetDateTime>,
    /// Consecutive failed polls.
    pub consecutive_failures: u32,
}

/// Status of every chain, shared between the watchers (writers) and the API (reader).
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<RwLock<BTreeMap<String, ChainStatus>>>);

impl StatusBoard {
    /// Replaces `chain`'s status with what `update` makes of it.
    pub fn update(&self, chain: &str, update: impl FnOnce(&mut ChainStatus)) {
        let mut board = self.0.write().expect("status lock poisoned");
        let status = board
            .entry(chain.to_owned())
            .or_insert_with(|| ChainStatus {
                chain: chain.to_owned(),
                ..ChainStatus::default()
            });
        update(status);
    }

    /// A copy of every chain's status, by chain name.
    pub fn snapshot(&self) -> Vec<ChainStatus> {
        self.0
            .read()
            .expect("status lock poisoned")
            .values()
            .cloned()
            .collect()
    }
}
