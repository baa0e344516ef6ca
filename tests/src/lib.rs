//! Test harness of Coinhub's end-to-end tests: real anvil, OpenBao, PostgreSQL and RabbitMQ,
//! and the real `coinhubd`, `coinhub` and `coinhub-exchange` binaries.
//!
//! Every resource is started per test and cleaned up on drop: [`AnvilNode`] and
//! [`BaoDevServer`] on free ports, a fresh [`Database`] and RabbitMQ [`Vhost`], the binaries
//! under test as [`Coinhubd`] and [`ExchangeProcess`] (SIGKILL with `kill()`, start again
//! with `restart()`). [`Stack`] starts all of them at once. [`run_test`] wraps a test body
//! and prints every log's tail when it fails.
//!
//! Prerequisites (`scripts/test` takes care of both):
//! - the tools in `<workspace>/.tools` (`scripts/install-tools.sh`), or `COINHUB_TOOLS_DIR`;
//! - the binaries: `cargo build --workspace --bins`.
//!
//! Missing prerequisites fail the test with the command that fixes them; nothing is skipped.

pub mod amqp;
pub mod anvil;
pub mod artifact;
pub mod coinhubd;
pub mod cosigner;
pub mod database;
pub mod env;
pub mod erc20;
pub mod exchange;
pub mod paths;
pub mod process;
pub mod promtool;
pub mod safe;
pub mod stack;
pub mod vhost;
pub mod wait;

pub use amqp::Amqp;
pub use anvil::{AnvilNode, ChainClient};
/// OpenBao dev server with transit key `coinhub-a`: the custody crate's fixture.
pub use coinhub_custody::testing::BaoDevServer;
pub use coinhubd::{AdminApi, Coinhubd, CoinhubdConfig, DepositView};
pub use database::Database;
pub use env::{TestEnv, run_test};
pub use erc20::deploy_erc20;
pub use exchange::{ExchangeConfig, ExchangeProcess};
pub use safe::deploy_safe;
pub use stack::{Stack, StackOptions, to_base_units};
pub use vhost::Vhost;
pub use wait::{free_port, wait_for, wait_until};
