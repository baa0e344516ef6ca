//! The whole service as deployed: the `coinhub-exchange run` binary with `[api]` and
//! `[markets]` configured, deposits arriving over RabbitMQ (`deposit.confirmed`), trading
//! over the signed HTTP API, events relayed to `exchange.events`, and a restart in the
//! middle. Real PostgreSQL and RabbitMQ; see `common/mod.rs`.

mod api_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api_support::rows;
use coinhub_custody::testing::BaoDevServer;
use coinhub_exchange::api::client::ApiClient;
use coinhub_exchange::api::keys;
use coinhub_exchange::api::secrets::ApiSecrets;
use coinhub_exchange::journal;
use coinhub_exchange::ledger::AccountKey;
use coinhub_exchange::trading::{self, NewOrder, OrderKind, Side};
use common::{TestDb, TestVhost, asset_symbol, confirmed, declare, publish, wait_for_outcome};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use secrecy::ExposeSecret;

const MARKET: &str = "btc_usdt";
const PRICE: &str = "30000000";
const EVENTS_QUEUE: &str = "test.exchange.events";

/// `coinhub-exchange run`, killed (SIGKILL) if still running when dropped.
struct Running {
    child: Option<Child>,
    log: PathBuf,
}

impl Running {
    fn start(config: &Path, log: PathBuf) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_coinhub-exchange"));
        for (key, _) in std::env::vars() {
            if key.starts_with("COINHUB_EXCHANGE") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(["--config", config.to_str().expect("utf-8 path"), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start coinhub-exchange run");
        Self {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 30 s) for a zero exit.
    async fn stop(mut self) {
        let child = self.child.take().expect("running");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(killed.success());
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .expect("exits within 30 s of SIGTERM")
        .expect("join")
        .expect("wait for the child");
        assert!(output.status.success(), "{}", self.log());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `/healthz` answers, or fails with the service's log.
async fn wait_healthy(client: &ApiClient, running: &Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !matches!(client.healthy().await, Ok(true)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "api not up within 30 s: {}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn limit(side: Side, quantity: &str) -> NewOrder {
    NewOrder {
        market: MARKET.into(),
        side,
        kind: OrderKind::Limit,
        price: Some(PRICE.into()),
        quantity: Some(quantity.into()),
        quote_amount: None,
        time_in_force: None,
        client_order_id: None,
    }
}

/// Proves: members funded by `deposit.confirmed` over RabbitMQ trade through the HTTP API
/// of the running binary with exact balances and fee revenue; trades go out on
/// `exchange.events`; after a restart (SIGTERM, start again) the resting order, the depth
/// and the balances are the same, trading goes on, and no trade is lost or duplicated.
///
/// Steps: bind a test queue to `exchange.events`; start `run` with `[api]` on a free port
/// and market `btc_usdt` (lot 1000 sat, tick 1000, maker 10 bps, taker 20 bps); publish
/// deposits (alice 10000 sat, bob 200 USDT); alice sells 5000 sat at 30 USDT/lot, bob buys
/// 3000 sat (bob pays 90180000, alice gets 89910000, fees 270000); wait for a
/// `trade.executed` message; restart; compare depth and balances; bob buys the other 2000
/// sat (pays 60120000, alice gets 59940000, fees 180000); check totals and two trades.
#[tokio::test]
async fn deposit_trade_restart_over_the_running_service() {
    let db = TestDb::new().await;
    let vhost = TestVhost::new();
    let connection = vhost.connect().await;
    declare(&connection).await;
    let channel = connection.create_channel().await.expect("channel");
    trading::declare_exchange(&channel)
        .await
        .expect("declare exchange.events");
    channel
        .queue_declare(
            EVENTS_QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare test queue");
    channel
        .queue_bind(
            EVENTS_QUEUE.into(),
            trading::EXCHANGE_EVENTS.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind test queue");

    let bao = BaoDevServer::start().await.expect("openbao dev server");
    let secrets = ApiSecrets::with_vault(bao.root_vault(), bao.transit_key_a());
    // A key stored in plaintext before migration 0011: `run` seals it at start.
    sqlx::query(
        "INSERT INTO api_keys (key_id, member_id, secret)
         VALUES ('ck_0123456789abcdef0123456789abcdef', 'carol', $1)",
    )
    .bind("c".repeat(64))
    .execute(&db.pool)
    .await
    .expect("insert a plaintext key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port();
    let config = std::env::temp_dir().join(format!(
        "coinhub-exchange-api-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{db}"

[amqp]
url = "{amqp}"
retry_delay_ms = 100
reconnect_delay_max_ms = 500

[api]
listen = "127.0.0.1:{port}"
max_clock_skew_secs = 30

[vault]
address = "{vault_address}"
token = "{vault_token}"
transit_key = "{transit_key}"

[markets.btc_usdt]
base = "BTC"
quote = "USDT"
tick_size = "1000"
lot_size = "1000"
maker_fee_bps = 10
taker_fee_bps = 20
"#,
            db = db.url,
            amqp = vhost.url,
            vault_address = bao.address,
            vault_token = bao.root_token.expose_secret(),
            transit_key = bao.transit_key_a().name,
        ),
    )
    .expect("write config");
    let log = config.with_extension("log");
    let running = Running::start(&config, log.clone());

    for event in [
        confirmed("alice", "BTC", "10000", 8),
        confirmed("bob", "USDT", "200000000", 6),
    ] {
        publish(&connection, &event).await;
        assert_eq!(wait_for_outcome(&db, event.id).await, "credited");
    }
    let base_url = format!("http://127.0.0.1:{port}");
    let client = |member: &'static str| {
        let pool = db.pool.clone();
        let base_url = base_url.clone();
        let secrets = secrets.clone();
        async move {
            let key = keys::create(&pool, &secrets, &member.parse().expect("member"), None)
                .await
                .expect("api key");
            ApiClient::new(&base_url, key.key_id, key.secret).expect("client")
        }
    };
    let alice = client("alice").await;
    let bob = client("bob").await;
    wait_healthy(&alice, &running).await;
    let carol_plaintext: Option<String> =
        sqlx::query_scalar("SELECT secret FROM api_keys WHERE member_id = 'carol'")
            .fetch_one(&db.pool)
            .await
            .expect("carol's key");
    assert_eq!(
        carol_plaintext, None,
        "run seals plaintext secrets before serving"
    );

    let ask = alice
        .place_order(&limit(Side::Sell, "5000"))
        .await
        .expect("ask");
    let bid = bob
        .place_order(&limit(Side::Buy, "3000"))
        .await
        .expect("bid");
    assert_eq!(bid.status, "filled");
    let alice_expected = [
        ("BTC".to_owned(), 8, "5000".to_owned(), "2000".to_owned()),
        ("USDT".to_owned(), 6, "89910000".to_owned(), "0".to_owned()),
    ];
    let bob_expected = [
        ("BTC".to_owned(), 8, "3000".to_owned(), "0".to_owned()),
        ("USDT".to_owned(), 6, "109820000".to_owned(), "0".to_owned()),
    ];
    assert_eq!(
        rows(&alice.balances().await.expect("balances").balances),
        alice_expected
    );
    assert_eq!(
        rows(&bob.balances().await.expect("balances").balances),
        bob_expected
    );

    // The trade goes out on exchange.events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut routing_keys = Vec::new();
    while !routing_keys
        .iter()
        .any(|k| k == trading::routing::TRADE_EXECUTED)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no trade.executed within 30 s (got {routing_keys:?}): {}",
            running.log()
        );
        match channel
            .basic_get(EVENTS_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            Some(message) => routing_keys.push(message.delivery.routing_key.to_string()),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    let depth_before = alice.depth(MARKET, None).await.expect("depth");
    assert_eq!(depth_before.asks, [(PRICE.to_owned(), "2000".to_owned())]);
    running.stop().await;
    let running = Running::start(&config, log);
    wait_healthy(&alice, &running).await;
    assert_eq!(
        alice.depth(MARKET, None).await.expect("depth"),
        depth_before
    );
    let open = alice.open_orders(Some(MARKET)).await.expect("open");
    assert_eq!(open.iter().map(|o| o.id).collect::<Vec<_>>(), [ask.id]);
    assert_eq!(
        rows(&alice.balances().await.expect("balances").balances),
        alice_expected
    );
    assert_eq!(
        rows(&bob.balances().await.expect("balances").balances),
        bob_expected
    );

    let second = bob
        .place_order(&limit(Side::Buy, "2000"))
        .await
        .expect("bid");
    assert_eq!(second.status, "filled");
    assert_eq!(
        rows(&alice.balances().await.expect("balances").balances),
        [
            ("BTC".to_owned(), 8, "5000".to_owned(), "0".to_owned()),
            ("USDT".to_owned(), 6, "149850000".to_owned(), "0".to_owned()),
        ]
    );
    assert_eq!(
        rows(&bob.balances().await.expect("balances").balances),
        [
            ("BTC".to_owned(), 8, "5000".to_owned(), "0".to_owned()),
            ("USDT".to_owned(), 6, "49700000".to_owned(), "0".to_owned()),
        ]
    );
    let fees = journal::balance(&db.pool, &AccountKey::fee_revenue(asset_symbol("USDT")))
        .await
        .expect("fee revenue");
    assert_eq!(fees.to_string(), "450000");
    assert_eq!(
        bob.trades(Some(MARKET), None).await.expect("trades").len(),
        2
    );
    assert_eq!(alice.trades(None, None).await.expect("trades").len(), 2);
    assert!(alice.open_orders(None).await.expect("open").is_empty());
    running.stop().await;
    db.assert_consistent().await;
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(config.with_extension("log"));
}
