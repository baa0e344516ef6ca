//! Test fixtures on the real services: a fresh PostgreSQL database and a fresh RabbitMQ
//! vhost per test, both removed on drop (also when the test panics).
//!
//! Environment (all optional):
//! - `DATABASE_URL`: an admin URL of the PostgreSQL server; its database part is replaced
//!   by a per-test database. Default `postgres://postgres@127.0.0.1:5432/postgres`.
//! - `COINHUB_TEST_AMQP_URL`: the broker without a vhost. Default
//!   `amqp://guest:guest@127.0.0.1:5672`. Vhosts are created with `rabbitmqctl` (run the
//!   tests as a user allowed to call it, e.g. root).

#![allow(dead_code, missing_docs)]

pub mod trading;

use std::future::Future;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage};
use coinhub_events::topology::EVENTS_EXCHANGE;
use coinhub_events::{BaseUnits, DepositEvent, DepositEventKind, SCHEMA_VERSION};
use coinhub_exchange::ledger::{AccountKey, AssetSymbol, Owner};
use coinhub_exchange::service::ConsumerSettings;
use coinhub_exchange::{db, journal, statement};
use lapin::{Connection, ConnectionProperties};
use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

/// How long a test waits for an asynchronous outcome before failing.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The server part of `url`: everything before the database name (and query).
fn server_url(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    match without_query[scheme_end..].rfind('/') {
        Some(slash) => without_query[..scheme_end + slash].to_owned(),
        None => without_query.to_owned(),
    }
}

/// A fresh, migrated database, dropped (with FORCE) when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `coinhub_exchange_test_<uuid>` and runs the migrations.
    pub async fn new() -> Self {
        let db = Self::create_empty().await;
        db::migrate(&db.pool)
            .await
            .expect("migrations apply to a fresh database");
        db
    }

    /// Creates the database without migrating it.
    pub async fn create_empty() -> Self {
        let db = Self::unborn();
        db.create().await;
        db
    }

    /// Names a database that does not exist yet; its pool connects lazily (and fails until
    /// [`TestDb::create`]). Dropped on drop if it was created.
    pub fn unborn() -> Self {
        let name = format!("coinhub_exchange_test_{}", Uuid::new_v4().simple());
        let url = format!("{}/{name}", server_url(&admin_url()));
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&url)
            .expect("valid test database URL");
        Self { name, url, pool }
    }

    /// `CREATE DATABASE` for this test database.
    pub async fn create(&self) {
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to PostgreSQL as admin");
        sqlx::query(&format!("CREATE DATABASE {}", self.name))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
    }

    /// The database configuration of a daemon using this database.
    pub fn config(&self) -> coinhub_exchange::config::DatabaseConfig {
        coinhub_exchange::config::DatabaseConfig {
            url: SecretString::from(self.url.clone()),
            max_connections: 5,
            acquire_timeout_ms: 2_000,
        }
    }

    /// `member`'s available balance in `asset`, in base units.
    pub async fn available(&self, member: &str, asset: &str) -> String {
        let key = AccountKey::available(member.parse().expect("member"), asset_symbol(asset));
        journal::balance(&self.pool, &key)
            .await
            .expect("read balance")
            .to_string()
    }

    /// The platform's hot wallet balance in `asset`, in base units.
    pub async fn hot_wallet(&self, asset: &str) -> String {
        let key = AccountKey::hot_wallet(asset_symbol(asset));
        journal::balance(&self.pool, &key)
            .await
            .expect("read balance")
            .to_string()
    }

    /// `SELECT count(*) FROM <table>`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// The stored outcome of message `id`, if it was processed.
    pub async fn outcome(&self, id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM processed_messages WHERE message_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .expect("read outcome")
    }

    /// Sets alice's available BTC balance to `balance` (base units) behind the ledger's back:
    /// with the triggers off for one session (`session_replication_role = replica`, what only
    /// a superuser can do), so that no entry explains it. Returns the account's id.
    pub async fn set_alice_btc_balance_behind_the_ledger(&self, balance: &str) -> i64 {
        let mut conn = self.pool.acquire().await.expect("connection");
        sqlx::query("SET session_replication_role = replica")
            .execute(&mut *conn)
            .await
            .expect("triggers off for this session");
        let id = sqlx::query_scalar(
            "UPDATE accounts SET balance = $1::numeric
              WHERE member_id = 'alice' AND asset = 'BTC' AND kind = 'available' RETURNING id",
        )
        .bind(balance)
        .fetch_one(&mut *conn)
        .await
        .expect("set the balance behind the ledger's back");
        sqlx::query("RESET session_replication_role")
            .execute(&mut *conn)
            .await
            .expect("triggers back on");
        id
    }

    /// Asserts the journal is consistent: every transfer sums to zero, every cached balance
    /// equals its entries, and every account's statement, read a page at a time, works its
    /// balance back to zero before its first entry (`statement::read` refuses otherwise)
    /// and lists each of its entries once.
    pub async fn assert_consistent(&self) {
        let mut conn = self.pool.acquire().await.expect("connection");
        let findings = journal::audit(&mut conn).await.expect("audit runs");
        assert!(findings.is_empty(), "journal inconsistent: {findings:?}");
        let accounts: Vec<(i64, Option<String>, String, String, i64)> = sqlx::query_as(
            "SELECT a.id, a.member_id::text, a.asset, a.kind,
                    (SELECT count(*) FROM entries e WHERE e.account_id = a.id)
               FROM accounts a ORDER BY a.id",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("read accounts");
        for (id, member, asset, kind, entries) in accounts {
            let owner = match member {
                Some(member) => Owner::Member(member.parse().expect("member id")),
                None => Owner::Platform,
            };
            let key = AccountKey::new(
                owner,
                asset_symbol(&asset),
                kind.parse().expect("account kind"),
            )
            .expect("account key");
            let (mut listed, mut before) = (0, None);
            loop {
                let page = statement::read(&self.pool, &key, before, 7)
                    .await
                    .unwrap_or_else(|e| panic!("statement of account {id} ({key}): {e}"))
                    .expect("the account exists");
                listed += page.lines.len();
                match page.lines.last() {
                    Some(last) if page.more => before = Some(last.entry_id),
                    _ => break,
                }
            }
            assert_eq!(
                i64::try_from(listed).expect("count"),
                entries,
                "statement of account {id} ({key})"
            );
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping the test database");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url()).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

pub fn asset_symbol(symbol: &str) -> AssetSymbol {
    symbol.parse().expect("valid asset symbol")
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh RabbitMQ vhost with full permissions for `guest`, deleted on drop.
pub struct TestVhost {
    pub name: String,
    pub url: String,
}

impl TestVhost {
    pub fn new() -> Self {
        let vhost = Self::unregistered();
        vhost.register();
        vhost
    }

    /// The name and URL of a vhost that does not exist yet (see [`TestVhost::register`]).
    pub fn unregistered() -> Self {
        let name = format!("coinhub-exchange-test-{}", Uuid::new_v4().simple());
        let base = std::env::var("COINHUB_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        Self { name, url }
    }

    pub fn register(&self) {
        rabbitmqctl(&["add_vhost", &self.name]);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &self.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
    }

    /// Makes the broker drop every connection to this vhost (a broker outage as clients
    /// see it).
    pub fn close_all_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "--limit",
            "100",
            "test outage",
        ]);
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .expect("connect to the test vhost")
    }

    /// Consumer settings with short pauses, for tests.
    pub fn settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            amqp_url: SecretString::from(self.url.clone()),
            prefetch: 4,
            retry_delay: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(5),
            consumer_tag: "coinhub-exchange-test".to_owned(),
        }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let output = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
        if !matches!(&output, Ok(out) if out.status.success()) {
            eprintln!("could not delete vhost {}: {output:?}", self.name);
        }
    }
}

/// A `deposit.confirmed` event for `member` with a fresh message id and deposit id.
pub fn confirmed(member: &str, asset: &str, amount: &str, decimals: u8) -> DepositEvent {
    let txid = format!("0x{}", Uuid::new_v4().simple());
    DepositEvent {
        version: SCHEMA_VERSION,
        id: Uuid::new_v4(),
        event: DepositEventKind::Confirmed,
        occurred_at: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("valid nanosecond"),
        deposit_id: DepositEvent::deposit_id_for("ethereum", &txid, 0),
        chain: "ethereum".into(),
        asset: asset.into(),
        member: member.parse().expect("valid member"),
        address: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
        txid,
        index: 0,
        amount: BaseUnits::from_str(amount).expect("valid amount"),
        decimals,
        block_height: 12,
        block_hash: "0xcd".into(),
        confirmations: 12,
        was_confirmed: false,
    }
}

/// The `deposit.orphaned` event of `confirmed`'s deposit, with a fresh id, one second later.
pub fn orphaned(confirmed: &DepositEvent, was_confirmed: bool) -> DepositEvent {
    DepositEvent {
        id: Uuid::new_v4(),
        event: DepositEventKind::Orphaned,
        occurred_at: confirmed.occurred_at + time::Duration::seconds(1),
        was_confirmed,
        ..confirmed.clone()
    }
}

/// Publishes raw bytes to `coinhub.events` with publisher confirms.
pub async fn publish_raw(
    connection: &Connection,
    routing_key: &str,
    message_id: &str,
    body: Vec<u8>,
) {
    let publisher = ConfirmingPublisher::open(connection)
        .await
        .expect("open publisher");
    publisher
        .publish(&OutgoingMessage {
            exchange: EVENTS_EXCHANGE.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: message_id.to_owned(),
            body,
            headers: Vec::new(),
            correlation_id: None,
        })
        .await
        .expect("broker confirms the message");
}

/// Publishes `event` as coinhubd would.
pub async fn publish(connection: &Connection, event: &DepositEvent) {
    let body = serde_json::to_vec(event).expect("serialize event");
    publish_raw(
        connection,
        event.event.routing_key(),
        &event.id.to_string(),
        body,
    )
    .await;
}

/// Declares the exchange's topology on `connection` (so mandatory publishes are routed).
pub async fn declare(connection: &Connection) {
    let channel = connection.create_channel().await.expect("channel");
    coinhub_exchange::service::declare_topology(&channel)
        .await
        .expect("declare topology");
    channel
        .close(200, "declared".into())
        .await
        .expect("close channel");
}

/// Polls `condition` every 50 ms until it holds; panics after [`WAIT_LIMIT`] with `what`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until message `id` has a final outcome, and returns it.
pub async fn wait_for_outcome(db: &TestDb, id: Uuid) -> String {
    wait_until(&format!("message {id} is processed"), || async {
        db.outcome(id)
            .await
            .is_some_and(|outcome| outcome != "pending")
    })
    .await;
    db.outcome(id).await.expect("outcome exists")
}

/// The `COINHUB_EXCHANGE__VAULT__*` environment that points the `coinhub-exchange` binary at
/// `bao`'s transit key `coinhub-a` (with the root token: a test server).
pub fn vault_env(bao: &coinhub_custody::testing::BaoDevServer) -> [(&'static str, String); 3] {
    use secrecy::ExposeSecret;
    [
        ("COINHUB_EXCHANGE__VAULT__ADDRESS", bao.address.clone()),
        (
            "COINHUB_EXCHANGE__VAULT__TOKEN",
            bao.root_token.expose_secret().to_owned(),
        ),
        (
            "COINHUB_EXCHANGE__VAULT__TRANSIT_KEY",
            bao.transit_key_a().name,
        ),
    ]
}

/// A local TCP port nobody listens on right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free local port")
        .port()
}

/// `promtool check metrics` (Prometheus' linter of the text exposition format) over `text`;
/// panics with promtool's complaints unless it is clean. promtool is `$COINHUB_PROMTOOL_BIN`,
/// else `<workspace>/.tools/prometheus/usr/bin/promtool` (`scripts/install-tools.sh`);
/// without it the test fails, it never skips.
pub fn assert_promtool_accepts(text: &str) {
    use std::io::Write as _;
    use std::process::Stdio;

    let promtool = std::env::var_os("COINHUB_PROMTOOL_BIN").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.tools/prometheus/usr/bin/promtool")
        },
        std::path::PathBuf::from,
    );
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/install-tools.sh",
                promtool.display()
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    assert!(
        output.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
