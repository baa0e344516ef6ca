//! Withdrawals on the exchange side: requesting (lock + outbox), relaying `withdrawal.request`
//! to `coinhub.commands`, and settling on `withdrawal.confirmed` / `withdrawal.failed`.
//! Real PostgreSQL (a fresh database per test) and RabbitMQ (a fresh vhost per test); see
//! `common/mod.rs` for the environment.

mod common;

use std::collections::BTreeMap;

use coinhub_events::topology::{self, COMMANDS_EXCHANGE, DEAD_LETTER_QUEUE, headers, routing};
use coinhub_events::{
    BaseUnits, SCHEMA_VERSION, WithdrawalEvent, WithdrawalEventKind, WithdrawalRequest,
};
use coinhub_exchange::config::{AssetConfig, AssetsConfig};
use coinhub_exchange::ledger::AccountKey;
use coinhub_exchange::withdrawals::{
    self, NewWithdrawal, RequestError, SettleOutcome, WITHDRAWALS_QUEUE, Withdrawal,
    WithdrawalStatus,
};
use coinhub_exchange::{deposits, journal, outbox, service};
use common::{TestDb, TestVhost, asset_symbol, confirmed, declare, publish_raw, wait_until};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The test queue standing in for coinhubd's `coinhubd.withdrawal.request`.
const TEST_REQUEST_QUEUE: &str = "test.withdrawal.request";

/// BTC with a withdrawal fee of 25 satoshi.
fn fees() -> AssetsConfig {
    AssetsConfig(BTreeMap::from([(
        "BTC".to_owned(),
        AssetConfig {
            withdraw_fee: "25".parse().expect("fee"),
        },
    )]))
}

/// Credits `member` with `amount` satoshi of BTC (8 decimals) as a confirmed deposit.
async fn fund(db: &TestDb, member: &str, amount: &str) {
    deposits::apply(&db.pool, &confirmed(member, "BTC", amount, 8))
        .await
        .expect("deposit credited");
}

fn new_withdrawal(id: Uuid, member: &str, amount: &str) -> NewWithdrawal {
    NewWithdrawal {
        id: Some(id),
        member: member.to_owned(),
        asset: "BTC".to_owned(),
        amount: amount.to_owned(),
        destination: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".to_owned(),
    }
}

async fn balance(db: &TestDb, key: AccountKey) -> String {
    journal::balance(&db.pool, &key)
        .await
        .expect("read balance")
        .to_string()
}

/// (available, locked) of `member` in BTC.
async fn member_btc(db: &TestDb, member: &str) -> (String, String) {
    let member: coinhub_events::MemberId = member.parse().expect("member");
    (
        balance(
            db,
            AccountKey::available(member.clone(), asset_symbol("BTC")),
        )
        .await,
        balance(db, AccountKey::locked(member, asset_symbol("BTC"))).await,
    )
}

/// (hot wallet, fee revenue) of the platform in BTC.
async fn platform_btc(db: &TestDb) -> (String, String) {
    (
        balance(db, AccountKey::hot_wallet(asset_symbol("BTC"))).await,
        balance(db, AccountKey::fee_revenue(asset_symbol("BTC"))).await,
    )
}

/// The platform's `network_fees` balance in `asset`.
async fn network_fees(db: &TestDb, asset: &str) -> String {
    balance(db, AccountKey::network_fees(asset_symbol(asset))).await
}

/// The `withdrawal_settle` transfer's entries of withdrawal `id` summed per (asset, kind):
/// signed base units (+ debit, - credit), sorted.
async fn settle_legs(db: &TestDb, id: Uuid) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT a.asset, a.kind, sum(e.amount)::text
           FROM transfers t JOIN entries e ON e.transfer_id = t.id
           JOIN accounts a ON a.id = e.account_id
          WHERE t.kind = 'withdrawal_settle' AND t.reference = $1
          GROUP BY a.asset, a.kind ORDER BY a.asset, a.kind",
    )
    .bind(id.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("settle entries")
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// The event coinhubd would send about `withdrawal`, with a fresh message id.
fn event(withdrawal: &Withdrawal, kind: WithdrawalEventKind) -> WithdrawalEvent {
    let confirmed = kind == WithdrawalEventKind::Confirmed;
    WithdrawalEvent {
        version: SCHEMA_VERSION,
        id: Uuid::new_v4(),
        event: kind,
        occurred_at: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("valid nanosecond"),
        withdrawal_id: withdrawal.id,
        member: withdrawal.member.clone(),
        chain: "bitcoin".into(),
        asset: withdrawal.asset.clone(),
        amount: withdrawal.amount.to_string(),
        decimals: withdrawal.decimals,
        destination: withdrawal.destination.clone(),
        txid: confirmed.then(|| "ab".repeat(32)),
        fee: confirmed.then(|| BaseUnits::from(141u128)),
        fee_asset: confirmed.then(|| "BTC".to_owned()),
        block_height: confirmed.then_some(107),
        reason: (!confirmed).then(|| "destination: not a bitcoin-regtest address".to_owned()),
    }
}

async fn request(db: &TestDb, new: &NewWithdrawal) -> withdrawals::Requested {
    withdrawals::request(&db.pool, &fees(), new)
        .await
        .expect("withdrawal accepted")
}

async fn outcome(db: &TestDb, message_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT outcome FROM withdrawal_messages WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(&db.pool)
        .await
        .expect("read outcome")
}

/// Declares a queue bound to `coinhub.commands` for `withdrawal.request`, as coinhubd does.
async fn bind_request_queue(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.expect("channel");
    topology::declare_exchanges(&channel)
        .await
        .expect("declare exchanges");
    topology::declare_queue(
        &channel,
        TEST_REQUEST_QUEUE,
        COMMANDS_EXCHANGE,
        &[routing::WITHDRAWAL_REQUEST],
    )
    .await
    .expect("declare request queue");
    channel
}

/// Messages ready in `queue` (passive declare).
async fn ready_messages(channel: &Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("queue exists")
        .message_count()
}

fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

/// A task running `future` until the returned token is cancelled.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn relay(db: &TestDb, vhost: &TestVhost) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(outbox::run_relay(
            db.pool.clone(),
            vhost.settings(),
            shutdown.clone(),
        ));
        Self { shutdown, task }
    }

    fn settlement(db: &TestDb, vhost: &TestVhost) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(service::run_withdrawal_consumer(
            db.pool.clone(),
            vhost.settings(),
            shutdown.clone(),
        ));
        Self { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(common::WAIT_LIMIT, self.task)
            .await
            .expect("task stops after shutdown")
            .expect("task does not panic");
    }
}

/// Proves: a request moves exactly amount + withdraw_fee from the member's `available` to
/// `locked` in one transfer, records the withdrawal as `requested` with the asset's
/// decimals, and queues exactly one `withdrawal.request` in the outbox.
///
/// Steps: credit alice 10000 sat; request 1000 sat with a 25 sat fee; read balances, the
/// withdrawal, the outbox row and the transfer's entries; audit the journal.
#[tokio::test]
async fn request_locks_amount_plus_fee_exactly() {
    let db = TestDb::new().await;
    fund(&db, "alice", "10000").await;
    let id = Uuid::new_v4();

    let requested = request(&db, &new_withdrawal(id, "alice", "1000")).await;

    assert!(requested.created);
    let withdrawal = &requested.withdrawal;
    assert_eq!(withdrawal.id, id);
    assert_eq!(withdrawal.status, WithdrawalStatus::Requested);
    assert_eq!(withdrawal.amount.as_str(), "1000");
    assert_eq!(withdrawal.fee.as_str(), "25");
    assert_eq!(withdrawal.decimals, 8);
    assert_eq!(member_btc(&db, "alice").await, pair("8975", "1025"));
    assert_eq!(platform_btc(&db).await, pair("10000", "0"));
    let entries: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.kind, e.amount::text FROM entries e
           JOIN accounts a ON a.id = e.account_id
           JOIN withdrawals w ON w.lock_transfer_id = e.transfer_id
          WHERE w.id = $1 ORDER BY a.kind",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .expect("entries");
    assert_eq!(
        entries,
        [pair("available", "1025"), pair("locked", "-1025")]
    );
    let (exchange, routing_key, payload): (String, String, serde_json::Value) =
        sqlx::query_as("SELECT exchange, routing_key, payload FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("outbox row");
    assert_eq!(exchange, COMMANDS_EXCHANGE);
    assert_eq!(routing_key, routing::WITHDRAWAL_REQUEST);
    assert_eq!(payload["amount"], "1000");
    assert_eq!(db.count("outbox").await, 1);
    db.assert_consistent().await;
}

/// Proves: a request above the member's available balance (counting the fee) is refused
/// with a typed error giving both numbers, and nothing is written: no withdrawal, no
/// outbox row, no transfer, balances unchanged.
///
/// Steps: credit alice 1000 sat; request 990 sat (+25 fee = 1015); check the error, the
/// table counts and the balances; then 975 (+25 = 1000, all of it) succeeds.
#[tokio::test]
async fn insufficient_funds_are_refused_and_nothing_is_written() {
    let db = TestDb::new().await;
    fund(&db, "alice", "1000").await;
    let transfers = db.count("transfers").await;

    let error = withdrawals::request(
        &db.pool,
        &fees(),
        &new_withdrawal(Uuid::new_v4(), "alice", "990"),
    )
    .await
    .expect_err("refused");

    match &error {
        RequestError::InsufficientFunds {
            available,
            required,
            ..
        } => {
            assert_eq!(available.as_str(), "1000");
            assert_eq!(required.as_str(), "1015");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(
        error.to_string().starts_with("amount: insufficient funds"),
        "{error}"
    );
    assert_eq!(db.count("withdrawals").await, 0);
    assert_eq!(db.count("outbox").await, 0);
    assert_eq!(db.count("transfers").await, transfers);
    assert_eq!(member_btc(&db, "alice").await, pair("1000", "0"));

    request(&db, &new_withdrawal(Uuid::new_v4(), "alice", "975")).await;
    assert_eq!(member_btc(&db, "alice").await, pair("0", "1000"));
    db.assert_consistent().await;
}

/// Proves: malformed amounts (zero, negative, fractional), an empty or over-long
/// destination, an unknown asset and an unknown member are refused before anything is
/// written, each with an error naming the field.
///
/// Steps: credit alice; submit each bad request; check the error's leading field name and
/// that no withdrawal, outbox row or transfer was added.
#[tokio::test]
async fn malformed_or_unknown_fields_are_refused_naming_the_field() {
    let db = TestDb::new().await;
    fund(&db, "alice", "1000").await;
    let transfers = db.count("transfers").await;
    let good = new_withdrawal(Uuid::new_v4(), "alice", "10");
    let cases = [
        (
            NewWithdrawal {
                amount: "0".into(),
                ..good.clone()
            },
            "amount:",
        ),
        (
            NewWithdrawal {
                amount: "-5".into(),
                ..good.clone()
            },
            "amount:",
        ),
        (
            NewWithdrawal {
                amount: "1.5".into(),
                ..good.clone()
            },
            "amount:",
        ),
        (
            NewWithdrawal {
                destination: String::new(),
                ..good.clone()
            },
            "destination:",
        ),
        (
            NewWithdrawal {
                destination: "x".repeat(129),
                ..good.clone()
            },
            "destination:",
        ),
        (
            NewWithdrawal {
                asset: "DOGE".into(),
                ..good.clone()
            },
            "asset:",
        ),
        (
            NewWithdrawal {
                member: "zed".into(),
                ..good.clone()
            },
            "member:",
        ),
    ];
    for (bad, field) in cases {
        let error = withdrawals::request(&db.pool, &fees(), &bad)
            .await
            .expect_err("refused");
        assert!(error.to_string().starts_with(field), "{bad:?}: {error}");
    }
    assert!(matches!(
        withdrawals::request(
            &db.pool,
            &fees(),
            &NewWithdrawal {
                asset: "DOGE".into(),
                ..good.clone()
            }
        )
        .await,
        Err(RequestError::UnknownAsset { .. })
    ));
    assert_eq!(db.count("withdrawals").await, 0);
    assert_eq!(db.count("outbox").await, 0);
    assert_eq!(db.count("transfers").await, transfers);
    assert_eq!(member_btc(&db, "alice").await, pair("1000", "0"));
}

/// Proves: the withdrawal id is an idempotency key: the same request again (also two at
/// once) locks once and queues one message; the same id with another amount is refused.
///
/// Steps: credit alice 10000; request id A twice in a row, then id B twice concurrently;
/// check `created`, balances and counts; request id A with another amount.
#[tokio::test]
async fn same_id_locks_once() {
    let db = TestDb::new().await;
    fund(&db, "alice", "10000").await;
    let a = new_withdrawal(Uuid::new_v4(), "alice", "1000");

    let first = request(&db, &a).await;
    let second = request(&db, &a).await;
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.withdrawal, second.withdrawal);

    let b = new_withdrawal(Uuid::new_v4(), "alice", "2000");
    let assets = fees();
    let (x, y) = tokio::join!(
        withdrawals::request(&db.pool, &assets, &b),
        withdrawals::request(&db.pool, &assets, &b)
    );
    let created = [x.expect("accepted"), y.expect("accepted")]
        .iter()
        .filter(|r| r.created)
        .count();
    assert_eq!(created, 1);

    assert_eq!(member_btc(&db, "alice").await, pair("6950", "3050"));
    assert_eq!(db.count("withdrawals").await, 2);
    assert_eq!(db.count("outbox").await, 2);
    let reused = withdrawals::request(
        &db.pool,
        &fees(),
        &NewWithdrawal {
            amount: "999".into(),
            ..a
        },
    )
    .await
    .expect_err("same id, other amount");
    assert!(
        matches!(
            reused,
            RequestError::IdReused {
                field: "amount",
                ..
            }
        ),
        "{reused}"
    );
    db.assert_consistent().await;
}

/// Proves: the relay publishes exactly one `withdrawal.request` per withdrawal on
/// `coinhub.commands`, persistent, with the AMQP `message_id` equal to the withdrawal id and
/// every field as requested (amount without the fee, the asset's decimals), and marks the
/// outbox row published.
///
/// Steps: bind a test queue to `coinhub.commands`/`withdrawal.request`; credit alice and
/// request a withdrawal (twice, same id); run the relay until the outbox is empty; get the
/// one message and compare every field; check no second message arrives.
#[tokio::test]
async fn relay_publishes_one_request_with_every_field() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    let connection = vhost.connect().await;
    let channel = bind_request_queue(&connection).await;
    fund(&db, "alice", "10000").await;
    let new = new_withdrawal(Uuid::new_v4(), "alice", "1000");
    let withdrawal = request(&db, &new).await.withdrawal;
    request(&db, &new).await;

    let relay = Running::relay(&db, &vhost);
    wait_until("the outbox is published", || async {
        outbox::unpublished(&db.pool).await.expect("count") == 0
    })
    .await;
    wait_until("the request is in the queue", || async {
        ready_messages(&channel, TEST_REQUEST_QUEUE).await == 1
    })
    .await;
    let message = channel
        .basic_get(TEST_REQUEST_QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a request");
    let delivery = message.delivery;
    assert_eq!(delivery.exchange.as_str(), COMMANDS_EXCHANGE);
    assert_eq!(delivery.routing_key.as_str(), routing::WITHDRAWAL_REQUEST);
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(withdrawal.id.to_string())
    );
    assert_eq!(*delivery.properties.delivery_mode(), Some(2));
    let sent = WithdrawalRequest::parse(&delivery.data).expect("a valid request");
    assert_eq!(
        sent,
        WithdrawalRequest {
            version: SCHEMA_VERSION,
            id: withdrawal.id,
            occurred_at: withdrawal.requested_at,
            member: "alice".parse().expect("member"),
            asset: "BTC".into(),
            amount: "1000".into(),
            decimals: 8,
            destination: new.destination.clone(),
        }
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(ready_messages(&channel, TEST_REQUEST_QUEUE).await, 0);
    relay.stop().await;
}

/// Proves: while no queue is bound for `withdrawal.request` (coinhubd not deployed yet), the
/// broker returns the mandatory publish and the relay keeps the row (attempts counted, the
/// error stored) instead of dropping it; once a queue is bound it is delivered, once.
///
/// Steps: request a withdrawal; run the relay with nothing bound; wait until the row shows
/// a failed attempt naming the missing queue; bind the queue; wait until published; count
/// messages.
#[tokio::test]
async fn relay_keeps_unroutable_request_until_a_queue_is_bound() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    fund(&db, "alice", "10000").await;
    request(&db, &new_withdrawal(Uuid::new_v4(), "alice", "1000")).await;

    let relay = Running::relay(&db, &vhost);
    wait_until("an unroutable attempt is recorded", || async {
        let (attempts, error): (i32, Option<String>) =
            sqlx::query_as("SELECT attempts, last_error FROM outbox")
                .fetch_one(&db.pool)
                .await
                .expect("outbox row");
        attempts > 0 && error.is_some_and(|e| e.contains("no queue is bound"))
    })
    .await;
    assert_eq!(outbox::unpublished(&db.pool).await.expect("count"), 1);

    let connection = vhost.connect().await;
    let channel = bind_request_queue(&connection).await;
    wait_until("the outbox is published", || async {
        outbox::unpublished(&db.pool).await.expect("count") == 0
    })
    .await;
    wait_until("one request in the queue", || async {
        ready_messages(&channel, TEST_REQUEST_QUEUE).await == 1
    })
    .await;
    relay.stop().await;
}

/// Proves: `withdrawal.confirmed` through the real consumer settles exactly: the member's
/// locked funds go to zero, the hot wallet loses the amount and the network fee (141 sat),
/// fee revenue gains the exchange's fee, `network_fees` gains the network fee, all in the one
/// `withdrawal_settle` transfer; the withdrawal records the txid and network fee (booked);
/// the same message again and a second `confirmed` with a new id change nothing; the journal
/// audits clean.
///
/// Steps: credit alice 10000 sat (hot wallet 10000); request 1000 (+25 fee); start the
/// settlement consumer; publish `withdrawal.confirmed`; wait for `settled`; check balances
/// and the row; publish the same message and another `confirmed`; wait for
/// `already_settled`; check nothing moved.
#[tokio::test]
async fn confirmed_settles_to_hot_wallet_and_fee_revenue_once() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    fund(&db, "alice", "10000").await;
    let withdrawal = request(&db, &new_withdrawal(Uuid::new_v4(), "alice", "1000"))
        .await
        .withdrawal;
    let consumer = Running::settlement(&db, &vhost);
    let connection = vhost.connect().await;
    declare(&connection).await;

    let confirmed = event(&withdrawal, WithdrawalEventKind::Confirmed);
    let body = serde_json::to_vec(&confirmed).expect("json");
    let key = routing::WITHDRAWAL_CONFIRMED;
    publish_raw(&connection, key, &confirmed.id.to_string(), body.clone()).await;
    wait_until("the confirmation is applied", || async {
        outcome(&db, confirmed.id).await.as_deref() == Some("settled")
    })
    .await;

    assert_eq!(member_btc(&db, "alice").await, pair("8975", "0"));
    assert_eq!(platform_btc(&db).await, pair("8859", "25"));
    assert_eq!(network_fees(&db, "BTC").await, "141");
    let stored = withdrawals::load(&db.pool, withdrawal.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(stored.status, WithdrawalStatus::Confirmed);
    assert_eq!(stored.txid, confirmed.txid);
    assert_eq!(
        stored.network_fee.as_ref().map(BaseUnits::as_str),
        Some("141")
    );
    assert_eq!(stored.network_fee_asset.as_deref(), Some("BTC"));
    assert_eq!(stored.network_fee_booked, Some(true));
    assert_eq!(stored.block_height, Some(107));
    assert_eq!(
        settle_legs(&db, withdrawal.id).await,
        [
            ("BTC", "fee_revenue", "-25"),
            ("BTC", "hot_wallet", "-1141"),
            ("BTC", "locked", "1025"),
            ("BTC", "network_fees", "141"),
        ]
        .map(|(a, k, m)| (a.to_owned(), k.to_owned(), m.to_owned()))
    );
    assert!(stored.settled_at.is_some());

    publish_raw(&connection, key, &confirmed.id.to_string(), body).await;
    let again = event(&withdrawal, WithdrawalEventKind::Confirmed);
    let again_body = serde_json::to_vec(&again).expect("json");
    publish_raw(&connection, key, &again.id.to_string(), again_body).await;
    wait_until("the second confirmation is applied", || async {
        outcome(&db, again.id).await.as_deref() == Some("already_settled")
    })
    .await;
    let channel = connection.create_channel().await.expect("channel");
    wait_until("the queue is drained", || async {
        ready_messages(&channel, WITHDRAWALS_QUEUE).await == 0
    })
    .await;
    assert_eq!(member_btc(&db, "alice").await, pair("8975", "0"));
    assert_eq!(platform_btc(&db).await, pair("8859", "25"));
    assert_eq!(network_fees(&db, "BTC").await, "141");
    assert_eq!(db.count("withdrawal_messages").await, 2);
    assert_eq!(ready_messages(&channel, DEAD_LETTER_QUEUE).await, 0);
    db.assert_consistent().await;
    consumer.stop().await;
}

/// Proves: `withdrawal.failed` returns exactly amount + fee from `locked` to `available`
/// and stores the reason; a second `failed` changes nothing; a `confirmed` after `failed`
/// (a contradiction) posts nothing and raises an alert; the journal audits clean.
///
/// Steps: credit alice 10000; request 1000 (+25); apply `failed`; check balances and row;
/// apply another `failed` and then a `confirmed`; check outcomes, the alert and balances.
#[tokio::test]
async fn failed_unlocks_exactly_and_contradictions_raise_an_alert() {
    let db = TestDb::new().await;
    fund(&db, "alice", "10000").await;
    let withdrawal = request(&db, &new_withdrawal(Uuid::new_v4(), "alice", "1000"))
        .await
        .withdrawal;
    let failed = event(&withdrawal, WithdrawalEventKind::Failed);

    let outcome = withdrawals::settle(&db.pool, &failed)
        .await
        .expect("applied");
    assert!(
        matches!(outcome, SettleOutcome::Unlocked { .. }),
        "{outcome:?}"
    );
    assert_eq!(member_btc(&db, "alice").await, pair("10000", "0"));
    assert_eq!(platform_btc(&db).await, pair("10000", "0"));
    let stored = withdrawals::load(&db.pool, withdrawal.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(stored.status, WithdrawalStatus::Failed);
    assert_eq!(stored.reason, failed.reason);

    assert_eq!(
        withdrawals::settle(&db.pool, &failed)
            .await
            .expect("applied"),
        SettleOutcome::DuplicateMessage
    );
    let failed_again = event(&withdrawal, WithdrawalEventKind::Failed);
    assert_eq!(
        withdrawals::settle(&db.pool, &failed_again)
            .await
            .expect("applied"),
        SettleOutcome::AlreadySettled
    );
    let late_confirmation = event(&withdrawal, WithdrawalEventKind::Confirmed);
    let outcome = withdrawals::settle(&db.pool, &late_confirmation)
        .await
        .expect("applied");
    assert!(
        matches!(outcome, SettleOutcome::ConflictAlert { .. }),
        "{outcome:?}"
    );
    let alert: (String, String) =
        sqlx::query_as("SELECT status, event FROM withdrawal_alerts WHERE withdrawal_id = $1")
            .bind(withdrawal.id)
            .fetch_one(&db.pool)
            .await
            .expect("alert row");
    assert_eq!(alert, pair("failed", "withdrawal.confirmed"));
    assert_eq!(member_btc(&db, "alice").await, pair("10000", "0"));
    assert_eq!(platform_btc(&db).await, pair("10000", "0"));
    let settlements: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transfers WHERE kind IN ('withdrawal_settle', 'withdrawal_unlock')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(settlements, 1);
    db.assert_consistent().await;
}

/// Proves: events whose amount or member differ from the withdrawal, or that name an
/// unknown withdrawal, are dead-lettered by the consumer with a reason naming the mismatch,
/// and post nothing; the withdrawal stays locked and a correct event still settles it.
///
/// Steps: request a withdrawal; start the consumer; publish `confirmed` with amount 999,
/// with member bob, and for a random withdrawal id; wait for three dead letters and check
/// their reasons; check balances and that no message was recorded; then publish a correct
/// `failed` and wait for `unlocked`.
#[tokio::test]
async fn mismatched_and_unknown_events_are_dead_lettered() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    fund(&db, "alice", "10000").await;
    let withdrawal = request(&db, &new_withdrawal(Uuid::new_v4(), "alice", "1000"))
        .await
        .withdrawal;
    let consumer = Running::settlement(&db, &vhost);
    let connection = vhost.connect().await;
    declare(&connection).await;
    let transfers = db.count("transfers").await;

    let mut wrong_amount = event(&withdrawal, WithdrawalEventKind::Confirmed);
    wrong_amount.amount = "999".into();
    let mut wrong_member = event(&withdrawal, WithdrawalEventKind::Confirmed);
    wrong_member.member = "bob".parse().expect("member");
    let mut unknown = event(&withdrawal, WithdrawalEventKind::Confirmed);
    unknown.withdrawal_id = Uuid::new_v4();
    for bad in [&wrong_amount, &wrong_member, &unknown] {
        let body = serde_json::to_vec(bad).expect("json");
        publish_raw(
            &connection,
            routing::WITHDRAWAL_CONFIRMED,
            &bad.id.to_string(),
            body,
        )
        .await;
    }

    let channel = connection.create_channel().await.expect("channel");
    wait_until("three dead letters", || async {
        ready_messages(&channel, DEAD_LETTER_QUEUE).await == 3
    })
    .await;
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let message = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a dead letter");
        assert_eq!(
            header(&message.delivery, headers::QUEUE).as_deref(),
            Some(WITHDRAWALS_QUEUE)
        );
        reasons.push(header(&message.delivery, headers::REASON).expect("reason"));
    }
    assert!(reasons[0].contains("amount mismatch"), "{}", reasons[0]);
    assert!(reasons[0].contains("\"999\""), "{}", reasons[0]);
    assert!(reasons[1].contains("member mismatch"), "{}", reasons[1]);
    assert!(reasons[2].contains("unknown withdrawal"), "{}", reasons[2]);
    assert_eq!(db.count("transfers").await, transfers);
    assert_eq!(db.count("withdrawal_messages").await, 0);
    assert_eq!(member_btc(&db, "alice").await, pair("8975", "1025"));

    let failed = event(&withdrawal, WithdrawalEventKind::Failed);
    let body = serde_json::to_vec(&failed).expect("json");
    publish_raw(
        &connection,
        routing::WITHDRAWAL_FAILED,
        &failed.id.to_string(),
        body,
    )
    .await;
    wait_until("the failure is applied", || async {
        outcome(&db, failed.id).await.as_deref() == Some("unlocked")
    })
    .await;
    assert_eq!(member_btc(&db, "alice").await, pair("10000", "0"));
    db.assert_consistent().await;
    consumer.stop().await;
}

/// USDT (an ERC-20 token, 6 decimals) with a withdrawal fee of 1 USDT.
fn usdt_fees() -> AssetsConfig {
    AssetsConfig(BTreeMap::from([(
        "USDT".to_owned(),
        AssetConfig {
            withdraw_fee: "1000000".parse().expect("fee"),
        },
    )]))
}

/// A `withdrawal.confirmed` of an ERC-20 `withdrawal` whose network fee is `fee` wei of
/// `fee_asset` (`None`: an older event without fee fields).
fn erc20_confirmed(withdrawal: &Withdrawal, fee: Option<(&str, &str)>) -> WithdrawalEvent {
    WithdrawalEvent {
        chain: "ethereum".into(),
        txid: Some(format!("0x{}", "cd".repeat(32))),
        fee: fee.map(|(amount, _)| amount.parse().expect("fee")),
        fee_asset: fee.map(|(_, asset)| asset.to_owned()),
        ..event(withdrawal, WithdrawalEventKind::Confirmed)
    }
}

/// Requests a USDT withdrawal of 50 USDT (+1 fee) by alice, who deposited 100 USDT.
async fn usdt_withdrawal(db: &TestDb) -> Withdrawal {
    deposits::apply(&db.pool, &confirmed("alice", "USDT", "100000000", 6))
        .await
        .expect("deposit credited");
    let new = NewWithdrawal {
        id: Some(Uuid::new_v4()),
        member: "alice".to_owned(),
        asset: "USDT".to_owned(),
        amount: "50000000".to_owned(),
        destination: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".to_owned(),
    };
    withdrawals::request(&db.pool, &usdt_fees(), &new)
        .await
        .expect("withdrawal accepted")
        .withdrawal
}

/// Proves: an ERC-20 withdrawal's network fee is booked in the chain's native coin (ETH),
/// not in the token: the ETH hot wallet loses the fee and ETH `network_fees` gains it, in the
/// same `withdrawal_settle` transfer that moves the USDT; the token's accounts see only the
/// amount and the exchange's fee; a redelivery and a second `confirmed` book nothing again;
/// the journal audits clean.
///
/// Steps: bob deposits 1 ETH (the ETH hot wallet holds 10^18 wei); alice deposits 100 USDT
/// and withdraws 50 (+1); apply `confirmed` with a fee of 21000 × 10 gwei in `eth` (coinhubd's
/// case may differ from the ledger's); check balances, the transfer's legs and the row; apply
/// the same message and another `confirmed`; check nothing moved.
#[tokio::test]
async fn erc20_network_fee_is_booked_in_the_native_coin_once() {
    let db = TestDb::new().await;
    deposits::apply(
        &db.pool,
        &confirmed("bob", "ETH", "1000000000000000000", 18),
    )
    .await
    .expect("deposit credited");
    let withdrawal = usdt_withdrawal(&db).await;
    let fee = "210000000000000"; // 21000 gas × 10 gwei
    let confirmation = erc20_confirmed(&withdrawal, Some((fee, "eth")));

    let outcome = withdrawals::settle(&db.pool, &confirmation)
        .await
        .expect("applied");
    let SettleOutcome::Settled { transfer_id } = outcome else {
        panic!("{outcome:?}");
    };
    let hot = |asset| balance(&db, AccountKey::hot_wallet(asset_symbol(asset)));
    assert_eq!(hot("ETH").await, "999790000000000000");
    assert_eq!(network_fees(&db, "ETH").await, fee);
    assert_eq!(hot("USDT").await, "50000000");
    assert_eq!(
        balance(&db, AccountKey::fee_revenue(asset_symbol("USDT"))).await,
        "1000000"
    );
    assert_eq!(
        network_fees(&db, "USDT").await,
        "0",
        "not booked in the token"
    );
    assert_eq!(
        settle_legs(&db, withdrawal.id).await,
        [
            ("ETH", "hot_wallet", "-210000000000000"),
            ("ETH", "network_fees", "210000000000000"),
            ("USDT", "fee_revenue", "-1000000"),
            ("USDT", "hot_wallet", "-50000000"),
            ("USDT", "locked", "51000000"),
        ]
        .map(|(a, k, m)| (a.to_owned(), k.to_owned(), m.to_owned()))
    );
    let stored = withdrawals::load(&db.pool, withdrawal.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(stored.status, WithdrawalStatus::Confirmed);
    assert_eq!(
        stored.network_fee.as_ref().map(BaseUnits::as_str),
        Some(fee)
    );
    assert_eq!(stored.network_fee_asset.as_deref(), Some("eth"));
    assert_eq!(stored.network_fee_booked, Some(true));

    let transfers = db.count("transfers").await;
    assert_eq!(
        withdrawals::settle(&db.pool, &confirmation)
            .await
            .expect("applied"),
        SettleOutcome::DuplicateMessage
    );
    let again = erc20_confirmed(&withdrawal, Some((fee, "ETH")));
    assert_eq!(
        withdrawals::settle(&db.pool, &again)
            .await
            .expect("applied"),
        SettleOutcome::AlreadySettled
    );
    assert_eq!(db.count("transfers").await, transfers);
    assert_eq!(hot("ETH").await, "999790000000000000");
    assert_eq!(network_fees(&db, "ETH").await, fee);
    assert_eq!(hot("USDT").await, "50000000");
    let settle_id: Uuid =
        sqlx::query_scalar("SELECT settle_transfer_id FROM withdrawals WHERE id = $1")
            .bind(withdrawal.id)
            .fetch_one(&db.pool)
            .await
            .expect("row");
    assert_eq!(settle_id, transfer_id);
    db.assert_consistent().await;
}

/// Proves: a network fee the ledger cannot book does not block the settlement: with no ETH
/// in the ledger (`fee_asset` unknown) and with an ETH hot wallet holding less than the fee
/// (gas funded outside the ledger: it may not go below zero), the withdrawal settles without
/// network fee legs and records the fee with `network_fee_booked = false`; an older event
/// without fee fields books nothing extra (`network_fee_booked` NULL); the journal audits
/// clean.
///
/// Steps: three USDT withdrawals by alice; confirm the first with a fee in ETH (not a ledger
/// asset); deposit 1000 wei ETH for bob and confirm the second with a larger fee; confirm the
/// third without fee fields; check balances, legs and rows after each.
#[tokio::test]
async fn unbookable_or_absent_network_fees_do_not_block_settlement() {
    let db = TestDb::new().await;
    let unknown = usdt_withdrawal(&db).await;
    let outcome = withdrawals::settle(&db.pool, &erc20_confirmed(&unknown, Some(("5000", "ETH"))))
        .await
        .expect("settled despite the unknown fee asset");
    assert!(
        matches!(outcome, SettleOutcome::Settled { .. }),
        "{outcome:?}"
    );
    let stored = withdrawals::load(&db.pool, unknown.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(stored.status, WithdrawalStatus::Confirmed);
    assert_eq!(
        stored.network_fee.as_ref().map(BaseUnits::as_str),
        Some("5000")
    );
    assert_eq!(stored.network_fee_booked, Some(false));
    assert_eq!(
        settle_legs(&db, unknown.id).await.len(),
        3,
        "no network fee legs"
    );

    deposits::apply(&db.pool, &confirmed("bob", "ETH", "1000", 18))
        .await
        .expect("deposit credited");
    let short = usdt_withdrawal(&db).await;
    let outcome = withdrawals::settle(&db.pool, &erc20_confirmed(&short, Some(("5000", "ETH"))))
        .await
        .expect("settled although the ledger's hot wallet cannot cover the fee");
    assert!(
        matches!(outcome, SettleOutcome::Settled { .. }),
        "{outcome:?}"
    );
    let stored = withdrawals::load(&db.pool, short.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(stored.network_fee_booked, Some(false));
    assert_eq!(
        settle_legs(&db, short.id).await.len(),
        3,
        "no network fee legs"
    );
    assert_eq!(
        balance(&db, AccountKey::hot_wallet(asset_symbol("ETH"))).await,
        "1000"
    );
    assert_eq!(network_fees(&db, "ETH").await, "0");

    let old = usdt_withdrawal(&db).await;
    let outcome = withdrawals::settle(&db.pool, &erc20_confirmed(&old, None))
        .await
        .expect("applied");
    assert!(
        matches!(outcome, SettleOutcome::Settled { .. }),
        "{outcome:?}"
    );
    let stored = withdrawals::load(&db.pool, old.id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(stored.network_fee, None);
    assert_eq!(stored.network_fee_booked, None);
    assert_eq!(settle_legs(&db, old.id).await.len(), 3);
    assert_eq!(
        balance(&db, AccountKey::hot_wallet(asset_symbol("USDT"))).await,
        "150000000"
    );
    db.assert_consistent().await;
}
