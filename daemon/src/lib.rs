//! `coinhubd`: chain watchers, custody keys, deposit addresses, the outbox relay to
//! RabbitMQ and the admin API; and the `coinhub` admin CLI's client.
//!
//! Data flow of a deposit: [`addresses`] hands out an address derived from key A's xpub
//! ([`custody`]); the chain's [`watcher`] drives `coinhub_chains::follower` over the node,
//! and [`store`] records each connected block, the deposits found in it and their
//! `deposit.*` events in one transaction; [`outbox`] publishes those events to
//! `coinhub.events`; the exchange credits `deposit.confirmed`.

pub mod addresses;
pub mod addressing;
pub mod api;
pub mod client;
pub mod commands;
pub mod config;
pub mod consumers;
pub mod cosigner;
pub mod custody;
pub mod daemon;
pub mod db;
pub mod metrics;
pub mod outbox;
pub mod status;
pub mod store;
pub mod watcher;
pub mod withdrawals;
