//! `coinhub-exchange`: the exchange's ledger, fed by coinhubd's deposit and withdrawal
//! events over AMQP.
//!
//! - [`ledger`]: the journal's rules without I/O (accounts, transfers, balancing).
//! - [`journal`]: the journal in PostgreSQL (posting transfers, reading balances).
//! - [`statement`]: an account's entries, newest first, with the balance after each.
//! - [`deposits`]: the `deposit.confirmed` / `deposit.orphaned` handler (exactly-once credit).
//! - [`withdrawals`]: requesting a withdrawal (lock + `withdrawal.request` in the outbox) and
//!   the `withdrawal.confirmed` / `withdrawal.failed` handler (settle or unlock, once).
//! - [`outbox`]: the exchange's outbox and its relay to RabbitMQ (publisher confirms,
//!   `mandatory`).
//! - [`service`]: the AMQP consumers with reconnects and graceful shutdown.
//! - [`retention`]: deletes published messages once they are old and no longer needed.
//! - [`metrics`]: Prometheus metrics at `GET /metrics`.
//! - [`memory`]: no transparent huge pages for the process (they cost the settlement ~25 %
//!   of its CPU).
//! - [`api`]: the member HTTP API (axum) with HMAC-signed requests per API key, and its
//!   client.
//! - [`config`], [`db`], [`cli`]: configuration, database pool and migrations,
//!   and the command line of the `coinhub-exchange` binary.
//!
//! Run the deposit consumer in-process:
//!
//! ```no_run
//! # async fn example(config: coinhub_exchange::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use coinhub_exchange::{db, service};
//! let pool = db::connect_lazy(&config.database)?;
//! db::migrate(&pool).await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! service::run_deposit_consumer(pool, service::ConsumerSettings::from(&config.amqp), shutdown)
//!     .await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod deposits;
pub mod journal;
pub mod ledger;
pub mod markets;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod retention;
pub mod service;
pub mod statement;
pub mod trading;
pub mod withdrawals;
