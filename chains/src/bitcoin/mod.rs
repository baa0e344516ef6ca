//! Bitcoin and Dash (same node RPC shape): node client, and what is built on it.
//!
//! - [`rpc`]: the async JSON-RPC + REST client for Bitcoin Core and Dash Core, with its wire
//!   types and typed errors.
//! - [`block`]: raw block scanning: walks a consensus-serialized block (Bitcoin with BIP141
//!   witnesses, or Dash with DIP2 payloads) and reports every output paying a watched
//!   scriptPubKey, without building the transactions.
//! - [`source`]: the follower's `ChainSource` over [`rpc`] and [`block`] / [`dash`].
//! - [`dash`]: Dash specifics: X11 block hashes and DIP2/DIP3/DIP4 special-transaction payloads.

pub mod block;
pub mod dash;
pub mod rpc;
pub mod source;
