//! Prometheus metrics of `coinhub-exchange`, served at `GET /metrics` on `[metrics] listen`
//! (text exposition format 0.0.4, unauthenticated: bind it to an internal address).
//!
//! Each scrape reads the pipeline's state from PostgreSQL ([`crate::trading::status`] and
//! the `outbox`), so the figures are those of the database, whichever process wrote them;
//! a scrape while PostgreSQL is unreachable answers `503` (the target shows as down) instead
//! of stale figures. Counters ([`Metrics::pruned`]) count what this process did since it
//! started.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `coinhub_exchange_trading_settled_seq` | `market` | last command of the last settled batch |
//! | `coinhub_exchange_trading_projected_seq` | `market` | `orders`/`trades` hold every batch up to this command |
//! | `coinhub_exchange_trading_unprojected_batches` | `market` | settled batches not yet in `orders`/`trades` |
//! | `coinhub_exchange_trading_unpublished_messages` | `market` | `exchange.events` messages not yet confirmed by the broker |
//! | `coinhub_exchange_outbox_backlog` | | withdrawal requests not yet confirmed by the broker |
//! | `coinhub_exchange_retention_deleted_total` | `table` | published rows deleted by [`crate::retention`] |
//! | `coinhub_exchange_trading_batches_total` | `market` | batches this process settled |
//! | `coinhub_exchange_trading_commands_total` | `market` | commands in them (places and cancels logged) |
//! | `coinhub_exchange_trading_trades_total` | `market` | trades in them |
//! | `coinhub_exchange_trading_settle_seconds` | `market` | histogram: from a batch's matching to its commit (its orders' accepted → settled) |
//! | `coinhub_exchange_trading_batch_failures_total` | `market`, `outcome` | batches not committed: `retried` (lost a conflict, run again) or `refused` (answered with an error) |
//!
//! The trading counters are this process's since it started (the engine records them when
//! started with [`crate::trading::EngineOptions::with_metrics`]).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::retention::Pruned;

/// Content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// Every metric; cheap to clone (the handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    settled_seq: IntGaugeVec,
    projected_seq: IntGaugeVec,
    unprojected_batches: IntGaugeVec,
    unpublished_messages: IntGaugeVec,
    outbox_backlog: IntGauge,
    /// Rows deleted by [`crate::retention`], by table (`outbox`, `trading_event_batches`).
    pub pruned: IntCounterVec,
    batches: IntCounterVec,
    commands: IntCounterVec,
    trades: IntCounterVec,
    settle_seconds: HistogramVec,
    batch_failures: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Upper bounds of [`Metrics`]' settlement latency buckets, in seconds (1 ms to 5 s).
const SETTLE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Why a batch was not committed (label `outcome` of the failures counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFailure {
    /// It lost a conflict with a concurrent transaction and runs again.
    Retried,
    /// Its commands were answered with an error.
    Refused,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let register = |collector: Box<dyn prometheus::core::Collector>| {
            registry
                .register(collector)
                .expect("each metric is registered once");
        };
        let market_gauge = |name: &str, help: &str| {
            let gauge = IntGaugeVec::new(Opts::new(name, help), &["market"]).expect("valid metric");
            register(Box::new(gauge.clone()));
            gauge
        };
        let settled_seq = market_gauge(
            "coinhub_exchange_trading_settled_seq",
            "Last command (market command number) of the market's last settled batch.",
        );
        let projected_seq = market_gauge(
            "coinhub_exchange_trading_projected_seq",
            "The orders and trades read models hold every batch up to this command.",
        );
        let unprojected_batches = market_gauge(
            "coinhub_exchange_trading_unprojected_batches",
            "Settled batches not yet projected into orders and trades.",
        );
        let unpublished_messages = market_gauge(
            "coinhub_exchange_trading_unpublished_messages",
            "exchange.events messages stored and not yet confirmed by the broker.",
        );
        let outbox_backlog = IntGauge::new(
            "coinhub_exchange_outbox_backlog",
            "Withdrawal requests in the outbox not yet confirmed by the broker.",
        )
        .expect("valid metric");
        register(Box::new(outbox_backlog.clone()));
        let pruned = IntCounterVec::new(
            Opts::new(
                "coinhub_exchange_retention_deleted_total",
                "Published rows deleted by the retention rounds, by table.",
            ),
            &["table"],
        )
        .expect("valid metric");
        register(Box::new(pruned.clone()));
        let market_counter = |name: &str, help: &str| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), &["market"]).expect("valid metric");
            register(Box::new(counter.clone()));
            counter
        };
        let batches = market_counter(
            "coinhub_exchange_trading_batches_total",
            "Batches of commands this process settled (committed).",
        );
        let commands = market_counter(
            "coinhub_exchange_trading_commands_total",
            "Commands (places and cancels) in the batches this process settled.",
        );
        let trades = market_counter(
            "coinhub_exchange_trading_trades_total",
            "Trades in the batches this process settled.",
        );
        let settle_seconds = HistogramVec::new(
            HistogramOpts::new(
                "coinhub_exchange_trading_settle_seconds",
                "From a batch's matching to its commit: its orders' accepted to settled time.",
            )
            .buckets(SETTLE_BUCKETS.to_vec()),
            &["market"],
        )
        .expect("valid metric");
        register(Box::new(settle_seconds.clone()));
        let batch_failures = IntCounterVec::new(
            Opts::new(
                "coinhub_exchange_trading_batch_failures_total",
                "Batches not committed: retried (lost a conflict, run again) or refused (answered with an error).",
            ),
            &["market", "outcome"],
        )
        .expect("valid metric");
        register(Box::new(batch_failures.clone()));
        Self {
            registry,
            settled_seq,
            projected_seq,
            unprojected_batches,
            unpublished_messages,
            outbox_backlog,
            pruned,
            batches,
            commands,
            trades,
            settle_seconds,
            batch_failures,
        }
    }

    /// Counts a batch of `market` that committed with `commands` commands and `trades`
    /// trades, `settle` after it was matched.
    pub fn record_settled(
        &self,
        market: &str,
        commands: usize,
        trades: usize,
        settle: std::time::Duration,
    ) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.batches.with_label_values(&[market]).inc();
        self.commands
            .with_label_values(&[market])
            .inc_by(count(commands));
        self.trades
            .with_label_values(&[market])
            .inc_by(count(trades));
        self.settle_seconds
            .with_label_values(&[market])
            .observe(settle.as_secs_f64());
    }

    /// Counts a batch of `market` that did not commit.
    pub fn record_failure(&self, market: &str, failure: BatchFailure) {
        let outcome = match failure {
            BatchFailure::Retried => "retried",
            BatchFailure::Refused => "refused",
        };
        self.batch_failures
            .with_label_values(&[market, outcome])
            .inc();
    }

    /// Counts the rows one retention round deleted.
    pub fn record_pruned(&self, pruned: Pruned) {
        self.pruned
            .with_label_values(&["outbox"])
            .inc_by(pruned.outbox);
        self.pruned
            .with_label_values(&["trading_event_batches"])
            .inc_by(pruned.trading_event_batches);
    }

    /// Reads the gauges' values from `pool`.
    ///
    /// Errors: the database's; the gauges keep their previous values then.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let markets = crate::trading::status::market_status(pool).await?;
        let backlog = crate::outbox::unpublished(pool).await?;
        for gauge in [
            &self.settled_seq,
            &self.projected_seq,
            &self.unprojected_batches,
            &self.unpublished_messages,
        ] {
            gauge.reset();
        }
        let as_gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for market in markets {
            let label = [market.market.as_str()];
            let set = |gauge: &IntGaugeVec, value: u64| {
                gauge.with_label_values(&label).set(as_gauge(value));
            };
            set(&self.settled_seq, market.settled_seq);
            set(&self.projected_seq, market.projected_seq);
            set(&self.unprojected_batches, market.unprojected_batches);
            set(&self.unpublished_messages, market.unpublished_messages);
        }
        self.outbox_backlog.set(backlog);
        Ok(())
    }

    /// The text exposition of every metric.
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

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
///
/// Errors: the listener's (accepting connections).
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics listening");
    }
    let app = router(pool, metrics).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The `/metrics` route alone (tests serve it on their own listener).
pub fn router(pool: PgPool, metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((pool, metrics))
}

async fn scrape(State((pool, metrics)): State<(PgPool, Metrics)>) -> Response {
    match metrics.refresh(&pool).await {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], metrics.render()).into_response(),
        Err(error) => {
            // The details go to the log only: the endpoint is unauthenticated.
            tracing::warn!(%error, "metrics scrape: reading the database failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}
