//! Chain following for Coinhub: node clients, block scanning, deposit detection and reorg
//! handling. This crate holds no keys and writes no database; it decides and reports.
//!
//! - [`bitcoin`](mod@crate::bitcoin): Bitcoin and Dash: the node client
//!   ([`crate::bitcoin::rpc`]).
//! - [`block`]: the chain-agnostic block reference `(height, hash, parent_hash)`.
//! - [`follower`]: the one implementation of fork handling for every chain: it walks the
//!   node's best chain block by block, finds the fork point by hash when the node switches
//!   branch, and tells a [`follower::FollowerStore`] what to connect and disconnect.
//! - [`destination`]: pure withdrawal checks: destination address for the chain and network
//!   (EIP-55, Base58Check version bytes, bech32/bech32m) and amount against `withdrawal_min`.
//! - [`evm`]: the EVM [`follower::ChainSource`] (alloy): native transfers from full blocks,
//!   ERC-20 `Transfer` logs by block hash (EIP-234).

pub mod bitcoin;
pub mod block;
pub mod destination;
pub mod evm;
pub mod follower;

pub use block::{BlockHash, BlockRef, Recipient, Transfer};
