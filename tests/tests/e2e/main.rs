//! End-to-end tests of Coinhub on real services (anvil, OpenBao, PostgreSQL, RabbitMQ) with
//! the real binaries. The harness is `coinhub_tests` (`tests/src/lib.rs`); run them with
//! `scripts/test`, which installs the tools and builds the binaries first.
//!
//! One test binary with a module per concern keeps the link step (alloy, sqlx, lapin) to
//! one:
//! - [`harness`]: the tools and services the other tests rely on behave as assumed;
//! - [`deposits`]: ETH and ERC-20 deposits confirmed at `confirmations_min`, credited once;
//! - [`restarts`]: crashes of coinhubd and coinhub-exchange lose and duplicate nothing;
//! - [`reorg`]: a reorged-out deposit is orphaned, a re-mined one credited once;
//! - [`delivery`]: duplicate events credit once, poison is dead-lettered;
//! - [`custody_init`]: `coinhubd init` creates key A once, only through OpenBao;
//! - [`addresses`]: concurrent `address.request`s get one address;
//! - [`node_status`]: `coinhub status` shows a node that is down, and its recovery;
//! - [`utxo`]: Bitcoin deposits to the 2-of-3 `wsh(sortedmulti)` wallet on the regtest
//!   node double, and a reorg after credit;
//! - [`dash`]: Dash deposits to the 2-of-3 `sh(sortedmulti)` wallet on the node double in
//!   Dash mode (X11 block hashes), credited in duffs;
//! - [`withdrawals_evm`]: ETH and ERC-20 withdrawals from the Safe 2-of-3 with the cosigner,
//!   settled by the exchange; a stuck one replaced with the same nonce;
//! - [`withdrawals_utxo`]: Bitcoin and Dash withdrawals batched into one 2-of-3 transaction,
//!   the cosigner's refusals, refusals before signing, and crashes around the broadcast.

mod addresses;
mod custody_init;
mod dash;
mod delivery;
mod deposits;
mod harness;
mod node_status;
mod reorg;
mod restarts;
mod utxo;
mod withdrawals_evm;
mod withdrawals_utxo;
