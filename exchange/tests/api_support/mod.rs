//! Fixtures of the HTTP API tests: the API served on an ephemeral port over a fresh test
//! database, stopped on drop; members funded by deposits and given API keys.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;

use coinhub_custody::testing::BaoDevServer;
use coinhub_exchange::api::client::ApiClient;
use coinhub_exchange::api::limits::RateLimits;
use coinhub_exchange::api::secrets::ApiSecrets;
use coinhub_exchange::api::{self, ApiState, BalanceView, keys};
use coinhub_exchange::config::{AssetConfig, AssetsConfig};
use coinhub_exchange::deposits;
use coinhub_exchange::trading::TradingEngine;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::confirmed;

/// The `[api] max_clock_skew_secs` of the test servers.
pub const SKEW_SECS: u64 = 30;

/// A running API server, with the OpenBao dev server that seals its API key secrets;
/// both stopped when dropped (the API with a graceful shutdown).
pub struct TestApi {
    pub base_url: String,
    pub pool: PgPool,
    /// Seals and opens API key secrets with `bao`'s transit key `coinhub-a`.
    pub secrets: ApiSecrets,
    pub bao: BaoDevServer,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestApi {
    /// Serves the API over `pool` on `127.0.0.1:<free port>`, with `trading` if given and
    /// the default rate limits.
    pub async fn start(pool: PgPool, assets: AssetsConfig, trading: Option<TradingEngine>) -> Self {
        Self::with_limits(pool, assets, trading, RateLimits::default()).await
    }

    /// [`TestApi::start`] with the rate limits `limits`.
    pub async fn with_limits(
        pool: PgPool,
        assets: AssetsConfig,
        trading: Option<TradingEngine>,
        limits: RateLimits,
    ) -> Self {
        let bao = BaoDevServer::start().await.expect("openbao dev server");
        let secrets = ApiSecrets::with_vault(bao.root_vault(), bao.transit_key_a());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let address = listener.local_addr().expect("bound address");
        let state = ApiState::with_limits(
            pool.clone(),
            secrets.clone(),
            assets,
            SKEW_SECS,
            limits,
            trading,
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        Self {
            base_url: format!("http://{address}"),
            pool,
            secrets,
            bao,
            shutdown,
            server,
        }
    }

    /// A client with a fresh API key of `member`.
    pub async fn client(&self, member: &str) -> ApiClient {
        let key = keys::create(
            &self.pool,
            &self.secrets,
            &member.parse().expect("member"),
            None,
        )
        .await
        .expect("create api key");
        ApiClient::new(&self.base_url, key.key_id, key.secret).expect("client")
    }

    /// A client without a key.
    pub fn public(&self) -> ApiClient {
        ApiClient::public(&self.base_url).expect("client")
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.server.abort();
    }
}

/// BTC with a withdrawal fee of 25 satoshi.
pub fn btc_fee_25() -> AssetsConfig {
    AssetsConfig(BTreeMap::from([(
        "BTC".to_owned(),
        AssetConfig {
            withdraw_fee: "25".parse().expect("fee"),
        },
    )]))
}

/// Credits `member` with `amount` base units of `asset` (with `decimals`) by a confirmed
/// deposit, as the deposit consumer would.
pub async fn fund(pool: &PgPool, member: &str, asset: &str, amount: &str, decimals: u8) {
    deposits::apply(pool, &confirmed(member, asset, amount, decimals))
        .await
        .expect("deposit credited");
}

/// `(asset, decimals, available, locked)` of a balances answer, for exact comparisons.
pub fn rows(balances: &[BalanceView]) -> Vec<(String, u8, String, String)> {
    balances
        .iter()
        .map(|b| {
            (
                b.asset.clone(),
                b.decimals,
                b.available.clone(),
                b.locked.clone(),
            )
        })
        .collect()
}

/// Everything a refused request must not change: every account balance, and the number
/// of withdrawals, outbox messages, orders, trades and stored command and event batches.
pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    // `orders` and `trades` are read models: project every settled batch before counting.
    let projected: bool =
        sqlx::query_scalar("SELECT to_regclass('trading_projection') IS NOT NULL")
            .fetch_one(pool)
            .await
            .expect("look up table");
    if projected {
        coinhub_exchange::trading::projection::catch_up_all(pool)
            .await
            .expect("orders and trades projected");
    }
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', coalesce(member_id, 'platform'), asset, kind, balance::text)
         FROM accounts ORDER BY member_id NULLS FIRST, asset, kind",
    )
    .fetch_all(pool)
    .await
    .expect("read accounts");
    for table in [
        "withdrawals",
        "outbox",
        "transfers",
        "orders",
        "trades",
        "trading_command_batches",
        "trading_event_batches",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await
            .expect("look up table");
        if exists {
            let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(pool)
                .await
                .expect("count rows");
            lines.push(format!("{table} {count}"));
        }
    }
    lines
}
