//! Prometheus metrics of coinhubd, served at `/metrics`. Base units in names (`_total`,
//! heights in blocks); every metric has a description.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// All metrics, cheap to clone (the handles are shared).
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Node's best block height, per chain.
    pub node_height: IntGaugeVec,
    /// Highest block connected by the watcher, per chain.
    pub scanned_height: IntGaugeVec,
    /// Blocks connected, per chain.
    pub blocks_connected: IntCounterVec,
    /// Reorgs unwound, per chain.
    pub reorgs: IntCounterVec,
    /// Transfers to deposit addresses found, per chain.
    pub transfers_found: IntCounterVec,
    /// Token transfers to deposit addresses from unconfigured contracts, per chain.
    pub unknown_token_transfers: IntCounterVec,
    /// Failed polls (node or database), per chain.
    pub poll_errors: IntCounterVec,
    /// Events published from the outbox.
    pub outbox_published: IntCounter,
    /// Events waiting in the outbox.
    pub outbox_backlog: IntGauge,
    /// Deposit addresses handed out, per chain.
    pub addresses_issued: IntCounterVec,
    /// Withdrawals per chain and status (refreshed by each payout engine round).
    pub withdrawals: IntGaugeVec,
    /// Payout engine rounds that failed (node, database, Vault, cosigner), per chain.
    pub payout_round_errors: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let chain_gauge = |name: &str, help: &str| {
            let gauge = IntGaugeVec::new(Opts::new(name, help), &["chain"]).expect("valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("metric registered once");
            gauge
        };
        let node_height = chain_gauge(
            "coinhub_chain_node_height",
            "Best block height reported by the chain's node.",
        );
        let scanned_height = chain_gauge(
            "coinhub_chain_scanned_height",
            "Highest block the watcher has connected.",
        );
        let chain_counter = |name: &str, help: &str| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), &["chain"]).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("metric registered once");
            counter
        };
        let blocks_connected = chain_counter(
            "coinhub_chain_blocks_connected_total",
            "Blocks connected by the watcher.",
        );
        let reorgs = chain_counter(
            "coinhub_chain_reorgs_total",
            "Reorgs unwound to a fork point.",
        );
        let transfers_found = chain_counter(
            "coinhub_chain_transfers_found_total",
            "Transfers to deposit addresses found in connected blocks.",
        );
        let unknown_token_transfers = chain_counter(
            "coinhub_chain_unknown_token_transfers_total",
            "Token transfers to deposit addresses from contracts that are no configured asset (ignored).",
        );
        let poll_errors = chain_counter(
            "coinhub_chain_poll_errors_total",
            "Watcher polls that failed (node or database).",
        );
        let addresses_issued = chain_counter(
            "coinhub_deposit_addresses_issued_total",
            "Deposit addresses handed out.",
        );
        let payout_round_errors = chain_counter(
            "coinhub_payout_round_errors_total",
            "Payout engine rounds that failed (node, database, Vault or cosigner unreachable); retried.",
        );
        let withdrawals = IntGaugeVec::new(
            Opts::new(
                "coinhub_withdrawals",
                "Withdrawals by chain and status (requested, signed, broadcast, confirmed, failed).",
            ),
            &["chain", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(withdrawals.clone()))
            .expect("metric registered once");
        let outbox_published = IntCounter::new(
            "coinhub_outbox_published_total",
            "Events published from the outbox to RabbitMQ.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_published.clone()))
            .expect("metric registered once");
        let outbox_backlog = IntGauge::new(
            "coinhub_outbox_backlog",
            "Events in the outbox not yet published.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_backlog.clone()))
            .expect("metric registered once");
        Self {
            registry,
            node_height,
            scanned_height,
            blocks_connected,
            reorgs,
            transfers_found,
            unknown_token_transfers,
            poll_errors,
            outbox_published,
            outbox_backlog,
            addresses_issued,
            withdrawals,
            payout_round_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding of gathered metrics cannot fail")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
