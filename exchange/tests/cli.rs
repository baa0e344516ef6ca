//! The `coinhub-exchange` binary: configuration, `migrate`, `balances`, `statement`,
//! `trading-status`, and
//! `run` with a graceful stop on SIGTERM. Real PostgreSQL and RabbitMQ; see `common/mod.rs`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coinhub_custody::testing::BaoDevServer;
use coinhub_exchange::deposits;
use common::{TestDb, TestVhost, confirmed, declare, publish, wait_for_outcome};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coinhub-exchange"));
    // Keep the caller's overrides out of the test.
    for (key, _) in std::env::vars() {
        if key.starts_with("COINHUB_EXCHANGE") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// `coinhub-exchange run` on `db`, `vhost` and `bao`'s transit key, the member API on a free
/// port and `/metrics` on `metrics_address`; stderr piped, stdout discarded.
fn spawn_run(
    db: &TestDb,
    vhost: &TestVhost,
    bao: &BaoDevServer,
    metrics_address: &str,
) -> std::process::Child {
    binary()
        .arg("run")
        .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url)
        .env("COINHUB_EXCHANGE__AMQP__URL", &vhost.url)
        .env(
            "COINHUB_EXCHANGE__API__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("COINHUB_EXCHANGE__METRICS__LISTEN", metrics_address)
        .envs(common::vault_env(bao))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coinhub-exchange run")
}

/// Writes `text` to a fresh temporary TOML file.
fn config_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "coinhub-exchange-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, text).expect("write config file");
    path
}

fn run(command: &mut Command) -> Output {
    command.output().expect("binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Proves: `balances --member` prints one line per asset and kind with the exact base units
/// and the decimal amount, `--json` gives the same as an object, and
/// `COINHUB_EXCHANGE__DATABASE__URL` overrides the file's `[database] url`.
///
/// Steps: credit alice 1.5 ETH (18 decimals) and 5 satoshi (8 decimals) with
/// `deposits::apply`; write a config file whose database URL points nowhere; run
/// `balances --member alice` with the real URL in the environment (text, then `--json`),
/// and `balances --platform`; compare the output exactly.
#[tokio::test]
async fn balances_show_base_units_and_decimals() {
    let db = TestDb::new().await;
    deposits::apply(
        &db.pool,
        &confirmed("alice", "ETH", "1500000000000000000", 18),
    )
    .await
    .expect("credit ETH");
    deposits::apply(&db.pool, &confirmed("alice", "BTC", "5", 8))
        .await
        .expect("credit BTC");
    let config = config_file("[database]\nurl = \"postgres://nobody@127.0.0.1:1/nowhere\"\n");

    let text = run(binary()
        .arg("--config")
        .arg(&config)
        .args(["balances", "--member", "alice"])
        .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url));
    assert!(text.status.success(), "{}", stderr(&text));
    assert_eq!(
        stdout(&text),
        "BTC available 5 (0.00000005)\nETH available 1500000000000000000 (1.5)\n"
    );

    let json = run(binary()
        .arg("--config")
        .arg(&config)
        .args(["balances", "--member", "alice", "--json"])
        .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url));
    assert!(json.status.success(), "{}", stderr(&json));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(
        value,
        serde_json::json!({
            "owner": "alice",
            "balances": [
                { "asset": "BTC", "kind": "available", "base_units": "5", "decimals": 8, "amount": "0.00000005" },
                { "asset": "ETH", "kind": "available", "base_units": "1500000000000000000", "decimals": 18, "amount": "1.5" },
            ]
        })
    );

    let platform = run(binary()
        .args(["balances", "--platform"])
        .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url));
    assert!(platform.status.success(), "{}", stderr(&platform));
    assert_eq!(
        stdout(&platform),
        "BTC hot_wallet 5 (0.00000005)\nETH hot_wallet 1500000000000000000 (1.5)\n"
    );
    std::fs::remove_file(config).expect("remove config file");
}

/// Proves: `withdraw` locks amount + the configured `withdraw_fee` and prints the
/// withdrawal (`--json`: every field plus `created`); the same `--id` again changes nothing
/// (`created: false`); a malformed amount fails naming the field; `withdrawals --member`
/// lists it; the fee can be set from the environment.
///
/// Steps: credit alice 10000 sat; write a config with `[assets.BTC] withdraw_fee = "25"`;
/// run `withdraw` twice with one id, once with amount `1.5`; read balances; run
/// `withdrawals --member alice` (text and JSON); run `withdraw` for bob with
/// `COINHUB_EXCHANGE__ASSETS__BTC__WITHDRAW_FEE=7`.
#[tokio::test]
async fn withdraw_locks_and_withdrawals_lists() {
    let db = TestDb::new().await;
    deposits::apply(&db.pool, &confirmed("alice", "BTC", "10000", 8))
        .await
        .expect("credit alice");
    deposits::apply(&db.pool, &confirmed("bob", "BTC", "100", 8))
        .await
        .expect("credit bob");
    let config = config_file(&format!(
        "[database]\nurl = \"{}\"\n[assets.BTC]\nwithdraw_fee = \"25\"\n",
        db.url
    ));
    let id = "6f1c0d9e-8f7a-4b5c-8a7c-0bd5b1a24f6f";
    let withdraw = |member: &str, amount: &str, id: &str| {
        let mut command = binary();
        command.arg("--config").arg(&config).args([
            "withdraw",
            "--member",
            member,
            "--asset",
            "btc",
            "--amount",
            amount,
            "--destination",
            "bcrt1qxyz",
            "--id",
            id,
            "--json",
        ]);
        command
    };

    let first = run(&mut withdraw("alice", "1000", id));
    assert!(first.status.success(), "{}", stderr(&first));
    let value: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON output");
    assert_eq!(value["created"], true);
    assert_eq!(value["id"], id);
    assert_eq!(value["member"], "alice");
    assert_eq!(value["asset"], "BTC");
    assert_eq!(value["amount"], "1000");
    assert_eq!(value["fee"], "25");
    assert_eq!(value["decimals"], 8);
    assert_eq!(value["status"], "requested");
    let second = run(&mut withdraw("alice", "1000", id));
    assert!(second.status.success(), "{}", stderr(&second));
    let value: serde_json::Value = serde_json::from_slice(&second.stdout).expect("JSON output");
    assert_eq!(value["created"], false);
    assert_eq!(db.available("alice", "BTC").await, "8975");

    let bad = run(&mut withdraw(
        "alice",
        "1.5",
        "6f1c0d9e-8f7a-4b5c-8a7c-000000000001",
    ));
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("amount:"), "{}", stderr(&bad));

    let text =
        run(binary()
            .arg("--config")
            .arg(&config)
            .args(["withdrawals", "--member", "alice"]));
    assert!(text.status.success(), "{}", stderr(&text));
    assert_eq!(
        stdout(&text),
        format!("{id} requested BTC 1000 (0.00001) fee 25 to bcrt1qxyz\n")
    );
    let json = run(binary().arg("--config").arg(&config).args([
        "withdrawals",
        "--member",
        "alice",
        "--json",
    ]));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(value["member"], "alice");
    assert_eq!(value["withdrawals"][0]["id"], id);

    let bob = run(binary()
        .arg("--config")
        .arg(&config)
        .args([
            "withdraw",
            "--member",
            "bob",
            "--asset",
            "BTC",
            "--amount",
            "90",
            "--destination",
            "bcrt1qxyz",
        ])
        .env("COINHUB_EXCHANGE__ASSETS__BTC__WITHDRAW_FEE", "7"));
    assert!(bob.status.success(), "{}", stderr(&bob));
    assert_eq!(db.available("bob", "BTC").await, "3");
    std::fs::remove_file(config).expect("remove config file");
}

/// Proves: `statement` lists an account's entries newest first with the transfer each
/// belongs to and the exact balance after it, pages with `--limit` / `--before` (the text's
/// `more:` hint and the JSON's `next_before` name the next page), reads member and platform
/// accounts, and refuses an account that never had an entry, a kind the owner cannot have
/// and a limit out of range.
///
/// Steps: credit alice 10000 sat (a deposit); lock 1000 + a 25 sat fee with `withdraw`;
/// read alice's available BTC as JSON and as text (the text compared line by line with the
/// JSON's ids and times), then a page of one entry and the page before it, her locked BTC
/// and the platform's hot wallet; then the refusals.
#[tokio::test]
async fn statement_lists_entries_with_the_balance_after_each() {
    let db = TestDb::new().await;
    deposits::apply(&db.pool, &confirmed("alice", "BTC", "10000", 8))
        .await
        .expect("credit alice");
    let statement = |args: &[&str]| {
        run(binary()
            .arg("statement")
            .args(args)
            .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url))
    };
    let json_of = |output: &Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", stderr(output));
        serde_json::from_slice(&output.stdout).expect("JSON output")
    };
    let lock = run(binary()
        .args([
            "withdraw",
            "--member",
            "alice",
            "--asset",
            "BTC",
            "--amount",
            "1000",
            "--destination",
            "bcrt1qxyz",
        ])
        .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url)
        .env("COINHUB_EXCHANGE__ASSETS__BTC__WITHDRAW_FEE", "25"));
    assert!(lock.status.success(), "{}", stderr(&lock));

    let available = ["--member", "alice", "--asset", "BTC", "--kind", "available"];
    let all = json_of(&statement(&[&available[..], &["--json"]].concat()));
    assert_eq!(all["owner"], "alice");
    assert_eq!(all["asset"], "BTC");
    assert_eq!(all["kind"], "available");
    assert_eq!(all["decimals"], 8);
    assert_eq!(all["balance"], "8975");
    assert_eq!(all["next_before"], serde_json::Value::Null);
    let entries = all["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{all}");
    let (lock_entry, deposit_entry) = (&entries[0], &entries[1]);
    assert_eq!(lock_entry["transfer_kind"], "withdrawal_lock");
    assert_eq!(lock_entry["side"], "debit");
    assert_eq!(lock_entry["base_units"], "1025");
    assert_eq!(lock_entry["amount"], "0.00001025");
    assert_eq!(lock_entry["balance_after"], "8975");
    assert_eq!(deposit_entry["transfer_kind"], "deposit");
    assert_eq!(deposit_entry["side"], "credit");
    assert_eq!(deposit_entry["base_units"], "10000");
    assert_eq!(deposit_entry["balance_after"], "10000");
    let lock_id = lock_entry["entry_id"].as_i64().expect("entry id");
    assert!(deposit_entry["entry_id"].as_i64().expect("entry id") < lock_id);

    let line = |entry: &serde_json::Value, figures: &str| {
        format!(
            "{} entry {} {figures} {} {}",
            entry["posted_at"].as_str().expect("time"),
            entry["entry_id"],
            entry["transfer_kind"].as_str().expect("kind"),
            entry["reference"].as_str().expect("reference"),
        )
    };
    let text = statement(&available);
    assert!(text.status.success(), "{}", stderr(&text));
    assert_eq!(
        stdout(&text),
        format!(
            "member alice/BTC/available balance 8975 (0.00008975)\n{}\n{}\n",
            line(
                lock_entry,
                "debit 1025 (0.00001025) balance 8975 (0.00008975)"
            ),
            line(
                deposit_entry,
                "credit 10000 (0.0001) balance 10000 (0.0001)"
            ),
        )
    );

    let newest = statement(&[&available[..], &["--limit", "1"]].concat());
    assert!(newest.status.success(), "{}", stderr(&newest));
    assert!(
        stdout(&newest).ends_with(&format!("more: --before {lock_id}\n")),
        "{}",
        stdout(&newest)
    );
    let first_page = json_of(&statement(
        &[&available[..], &["--limit", "1", "--json"]].concat(),
    ));
    assert_eq!(first_page["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(first_page["next_before"], lock_id);
    let lock_id = lock_id.to_string();
    let second_page = json_of(&statement(
        &[
            &available[..],
            &["--limit", "1", "--before", &lock_id, "--json"],
        ]
        .concat(),
    ));
    assert_eq!(second_page["balance"], "8975");
    assert_eq!(second_page["entries"], serde_json::json!([deposit_entry]));
    assert_eq!(second_page["next_before"], serde_json::Value::Null);

    let locked = json_of(&statement(&[
        "--member", "alice", "--asset", "BTC", "--kind", "locked", "--json",
    ]));
    assert_eq!(locked["balance"], "1025");
    assert_eq!(locked["entries"][0]["side"], "credit");
    assert_eq!(locked["entries"][0]["balance_after"], "1025");
    assert_eq!(
        locked["entries"][0]["transfer_id"],
        lock_entry["transfer_id"]
    );
    let hot_wallet = json_of(&statement(&[
        "--platform",
        "--asset",
        "BTC",
        "--kind",
        "hot_wallet",
        "--json",
    ]));
    assert_eq!(hot_wallet["owner"], "platform");
    assert_eq!(hot_wallet["entries"][0]["side"], "debit");
    assert_eq!(hot_wallet["entries"][0]["balance_after"], "10000");

    let unknown = statement(&["--member", "bob", "--asset", "BTC", "--kind", "available"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no account member bob/BTC/available"),
        "{}",
        stderr(&unknown)
    );
    let wrong_kind = statement(&[
        "--member",
        "alice",
        "--asset",
        "BTC",
        "--kind",
        "hot_wallet",
    ]);
    assert!(!wrong_kind.status.success());
    assert!(
        stderr(&wrong_kind).contains("--kind does not fit the owner"),
        "{}",
        stderr(&wrong_kind)
    );
    let no_limit = statement(&[&available[..], &["--limit", "0"]].concat());
    assert!(!no_limit.status.success());
    assert!(
        stderr(&no_limit).contains("--limit"),
        "{}",
        stderr(&no_limit)
    );
}

/// Proves: an invalid configuration stops the binary at start with a message naming the
/// key, and a missing config file is reported.
///
/// Steps: run `migrate` with `[database] url = 5`, with `[amqp] prefetch = 0`, with an
/// unknown key, with an invalid environment override, with a `[vault]` address that is not
/// a URL, and `run` without `[vault]`; and with a missing file; each exits non-zero and
/// stderr names the key or file.
#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    const VAULT_FTP: &str = "[database]\nurl = \"postgres://h/x\"\n[vault]\naddress = \"ftp://v\"\ntoken = \"t\"\ntransit_key = \"k\"\n";
    let cases = [
        ("migrate", "[database]\nurl = 5\n", None, "`database.url`"),
        (
            "migrate",
            "[database]\nurl = \"postgres://h/x\"\n[amqp]\nprefetch = 0\n",
            None,
            "`amqp.prefetch`",
        ),
        (
            "migrate",
            "[database]\nurl = \"postgres://h/x\"\nurll = \"x\"\n",
            None,
            "`database.urll`",
        ),
        (
            "migrate",
            "[database]\nurl = \"postgres://h/x\"\n",
            Some(("COINHUB_EXCHANGE__AMQP__URL", "http://x")),
            "`amqp.url`",
        ),
        ("migrate", "", None, "`database`"),
        ("migrate", VAULT_FTP, None, "`vault.address`"),
        // Before it touches the (unreachable) database.
        (
            "run",
            "[database]\nurl = \"postgres://h/x\"\n",
            None,
            "`vault`",
        ),
    ];
    for (subcommand, text, env, expected) in cases {
        let config = config_file(text);
        let mut command = binary();
        command.arg("--config").arg(&config).arg(subcommand);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let output = run(&mut command);
        assert!(!output.status.success(), "{text:?} must be refused");
        assert!(
            stderr(&output).contains(expected),
            "{text:?}: {}",
            stderr(&output)
        );
        std::fs::remove_file(config).expect("remove config file");
    }
    let output = run(binary().args(["--config", "/nonexistent/coinhub.toml", "migrate"]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/coinhub.toml"),
        "{}",
        stderr(&output)
    );
}

/// Proves: `migrate` creates the schema and is idempotent, and `run` migrates, credits a
/// deposit from RabbitMQ, serves `/metrics` that promtool accepts, and stops cleanly (exit
/// 0) on SIGTERM.
///
/// Steps: create an empty database and a vhost; run `migrate` twice; start `run` with both
/// URLs and free API and metrics ports from the environment; publish a deposit; wait for the
/// credit; scrape `/metrics` (outbox backlog 0, promtool clean); send SIGTERM; wait for a
/// zero exit and the shutdown log line.
#[tokio::test]
async fn migrate_then_run_until_sigterm() {
    let db = TestDb::create_empty().await;
    let vhost = TestVhost::new();
    let bao = BaoDevServer::start().await.expect("openbao dev server");
    for _ in 0..2 {
        let output = run(binary()
            .arg("migrate")
            .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url));
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let metrics_address = format!("127.0.0.1:{}", common::free_port());
    let child = spawn_run(&db, &vhost, &bao, &metrics_address);
    let pid = child.id().to_string();

    let connection = vhost.connect().await;
    declare(&connection).await;
    let event = confirmed("frank", "ETH", "123456789", 18);
    publish(&connection, &event).await;
    assert_eq!(wait_for_outcome(&db, event.id).await, "credited");
    assert_eq!(db.available("frank", "ETH").await, "123456789");
    let scraped = reqwest::get(format!("http://{metrics_address}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(scraped.status(), 200);
    let exposition = scraped.text().await.expect("body");
    assert!(
        exposition.contains("\ncoinhub_exchange_outbox_backlog 0\n"),
        "{exposition}"
    );
    common::assert_promtool_accepts(&exposition);

    let killed = Command::new("kill")
        .args(["-TERM", &pid])
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
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("coinhub-exchange stopped"), "{log}");
}

/// Proves: `trading-status` (text and JSON) and `/metrics` show, per market, the last settled
/// command and how far the read models and the `exchange.events` messages are behind it;
/// promtool accepts the exposition.
///
/// Steps: alice sells and bob buys while the projection is held (the market's watermark row
/// locked): settled 2, projected 0, 2 batches behind, 4 messages unpublished (the sell's
/// order update; the trade and both order updates), in both; release and let the engine
/// catch up: projected 2, nothing behind.
#[tokio::test]
async fn trading_status_and_metrics_show_what_is_behind() {
    use coinhub_exchange::trading::{EventsSink, Side, TradingEngine};

    let db = TestDb::new().await;
    deposits::apply(&db.pool, &confirmed("alice", "BTC", "100000000", 8))
        .await
        .expect("credit BTC");
    deposits::apply(&db.pool, &confirmed("bob", "USDT", "10000000", 6))
        .await
        .expect("credit USDT");
    let engine = TradingEngine::start(
        db.pool.clone(),
        common::trading::markets(),
        EventsSink::Outbox,
    )
    .await
    .expect("engine starts");
    let order = |side| common::trading::limit(side, "100000", "1000");
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM trading_projection WHERE market = 'btc_usdt' FOR UPDATE")
        .fetch_one(&mut *holder)
        .await
        .expect("hold the projection");
    let alice = "alice".parse().expect("member");
    let bob = "bob".parse().expect("member");
    engine.place(&alice, order(Side::Sell)).await.expect("sell");
    engine.place(&bob, order(Side::Buy)).await.expect("buy");

    let status = |json: bool| {
        let mut command = binary();
        command
            .arg("trading-status")
            .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url);
        if json {
            command.arg("--json");
        }
        let output = run(&mut command);
        assert!(output.status.success(), "{}", stderr(&output));
        output
    };
    let behind: serde_json::Value =
        serde_json::from_slice(&status(true).stdout).expect("JSON output");
    assert_eq!(behind[0]["market"], "btc_usdt");
    assert_eq!(
        (
            &behind[0]["settled_seq"],
            &behind[0]["projected_seq"],
            &behind[0]["unprojected_batches"],
            &behind[0]["unpublished_messages"]
        ),
        (&2.into(), &0.into(), &2.into(), &4.into())
    );
    assert!(
        stdout(&status(false))
            .starts_with("btc_usdt settled 2 projected 0 (2 batches behind, since ")
    );
    let metrics = serve_metrics(&db).await;
    let behind = scrape(&metrics).await;
    for line in [
        "coinhub_exchange_trading_settled_seq{market=\"btc_usdt\"} 2",
        "coinhub_exchange_trading_projected_seq{market=\"btc_usdt\"} 0",
        "coinhub_exchange_trading_unprojected_batches{market=\"btc_usdt\"} 2",
        "coinhub_exchange_trading_unpublished_messages{market=\"btc_usdt\"} 4",
        "coinhub_exchange_outbox_backlog 0",
    ] {
        assert!(behind.lines().any(|l| l == line), "{line} in:\n{behind}");
    }
    common::assert_promtool_accepts(&behind);

    holder.rollback().await.expect("release");
    engine
        .trades(&bob, None, 10)
        .await
        .expect("trades catch up");
    let caught_up: serde_json::Value =
        serde_json::from_slice(&status(true).stdout).expect("JSON output");
    assert_eq!(
        (
            &caught_up[0]["settled_seq"],
            &caught_up[0]["projected_seq"],
            &caught_up[0]["unprojected_batches"]
        ),
        (&2.into(), &2.into(), &0.into())
    );
    assert_eq!(caught_up.as_array().map(Vec::len), Some(1));
    let caught_up = scrape(&metrics).await;
    assert!(
        caught_up
            .lines()
            .any(|l| l == "coinhub_exchange_trading_unprojected_batches{market=\"btc_usdt\"} 0"),
        "{caught_up}"
    );
}

/// Serves `coinhub_exchange::metrics` for `db` on a free local port; returns its address.
async fn serve_metrics(db: &TestDb) -> std::net::SocketAddr {
    serve_metrics_on(db.pool.clone()).await
}

/// Serves `coinhub_exchange::metrics` reading `pool`, on a free local port.
async fn serve_metrics_on(pool: sqlx::PgPool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let metrics = coinhub_exchange::metrics::Metrics::new();
    tokio::spawn(coinhub_exchange::metrics::serve(
        listener,
        pool,
        metrics,
        tokio_util::sync::CancellationToken::new(),
    ));
    address
}

/// `GET /metrics` from `address`: the exposition (status 200 checked).
async fn scrape(address: &std::net::SocketAddr) -> String {
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.expect("body")
}

/// Proves: `run` stops at start, with a message naming the address, when `[metrics] listen`
/// cannot be bound, instead of running without metrics.
///
/// Steps: hold a local port; start `run` with `COINHUB_EXCHANGE__METRICS__LISTEN` on it; expect
/// a non-zero exit within 30 s and the binding error in the log.
#[tokio::test]
async fn run_stops_when_the_metrics_address_is_taken() {
    let db = TestDb::create_empty().await;
    let vhost = TestVhost::new();
    let bao = BaoDevServer::start().await.expect("openbao dev server");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let address = taken.local_addr().expect("address").to_string();
    let child = spawn_run(&db, &vhost, &bao, &address);
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("exits within 30 s")
    .expect("join")
    .expect("wait for the child");
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains(&format!("binding the metrics endpoint to {address}")),
        "{log}"
    );
    drop(taken);
}

/// Proves: a scrape while the database cannot be read answers `503 database unavailable`,
/// without the error's details (the endpoint is unauthenticated) and without stale figures.
///
/// Steps: serve `/metrics` on a pool whose database does not exist; scrape: 503, body
/// `database unavailable`.
#[tokio::test]
async fn metrics_answer_503_while_the_database_is_unreadable() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:5432/coinhub_exchange_no_such_database")
        .expect("lazy pool");
    let address = serve_metrics_on(pool).await;
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.expect("body"),
        "database unavailable\n"
    );
}

/// Proves: `audit` passes a consistent journal (exit 0, with what it checked) and names an
/// account whose balance its entries do not give (non-zero exit, as text and as JSON).
///
/// Steps: credit alice 10000 sat and bob 500 sat (deposits); `audit`: consistent, with the
/// database's own counts of transfers, entries and accounts; set alice's available BTC to
/// 10001 behind the ledger's back (its triggers off for one session); `audit` and
/// `audit --json` now fail and name her account, its balance and what its entries give.
#[tokio::test]
async fn audit_passes_a_consistent_journal_and_names_a_balance_its_entries_do_not_give() {
    let db = TestDb::new().await;
    deposits::apply(&db.pool, &confirmed("alice", "BTC", "10000", 8))
        .await
        .expect("credit alice");
    deposits::apply(&db.pool, &confirmed("bob", "BTC", "500", 8))
        .await
        .expect("credit bob");
    let audit = |json: bool| {
        let mut command = binary();
        command
            .arg("audit")
            .env("COINHUB_EXCHANGE__DATABASE__URL", &db.url);
        if json {
            command.arg("--json");
        }
        run(&mut command)
    };
    let (transfers, entries, accounts): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries),
                (SELECT count(*) FROM accounts)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("counts");
    assert_eq!(
        (transfers, entries),
        (2, 4),
        "two deposits of two legs each"
    );
    let checked = format!("{transfers} transfers, {entries} entries, {accounts} accounts checked");

    let consistent = audit(false);
    assert!(consistent.status.success(), "{}", stderr(&consistent));
    assert_eq!(
        stdout(&consistent),
        format!("journal consistent: {checked}\n")
    );

    let alice_id = db.set_alice_btc_balance_behind_the_ledger("10001").await;

    let text = audit(false);
    assert!(!text.status.success(), "a drift must fail the audit");
    assert_eq!(
        stdout(&text),
        format!(
            "account member alice/BTC/available (id {alice_id}) has balance 10001, its entries \
             give 10000 (base units)\njournal audit found 1 disagreement(s): {checked}\n"
        )
    );
    assert!(
        stderr(&text).contains("the journal audit found 1 disagreement(s)"),
        "{}",
        stderr(&text)
    );

    let json = audit(true);
    assert!(!json.status.success(), "a drift must fail the audit");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(
        report,
        serde_json::json!({
            "consistent": false,
            "transfers": transfers,
            "entries": entries,
            "accounts": accounts,
            "findings": [{
                "finding": "balance_drift",
                "account_id": alice_id,
                "account": "member alice/BTC/available",
                "balance": "10001",
                "from_entries": "10000",
            }],
        })
    );
}
