//! The deposit consumer end to end: real RabbitMQ (a fresh vhost per test) and real
//! PostgreSQL (a fresh database per test); see `common/mod.rs` for the environment.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use coinhub_events::DepositEvent;
use coinhub_events::consumer::{self, ConsumerOptions, Handler, HandlerError};
use coinhub_events::topology::{DEAD_LETTER_QUEUE, headers, routing};
use coinhub_exchange::deposits::{DEPOSITS_QUEUE, DepositHandler};
use coinhub_exchange::{db, service};
use common::{
    TestDb, TestVhost, confirmed, declare, publish, publish_raw, wait_for_outcome, wait_until,
};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

/// Runs the real deposit consumer in a task; cancels and joins it on `stop`.
struct RunningConsumer {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningConsumer {
    fn start(db: &TestDb, vhost: &TestVhost) -> Self {
        Self::start_with(DepositHandler::new(db.pool.clone()), vhost)
    }

    fn start_with<H: Handler + 'static>(handler: H, vhost: &TestVhost) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(service::run_consumer(
            handler,
            vhost.settings(),
            shutdown.clone(),
        ));
        Self { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(common::WAIT_LIMIT, self.task)
            .await
            .expect("consumer stops after shutdown")
            .expect("consumer task does not panic");
    }
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

/// Proves: a confirmed deposit credits exactly its amount, to the base unit, for an amount
/// above 2^128 (so neither u64, u128 nor a float could carry it); the transfer's entries
/// sum to zero and the hot wallet holds exactly what the member was credited.
///
/// Steps: start the consumer; publish `deposit.confirmed` of
/// 1234567890123456789012345678901234567891 wei; wait until its message is processed;
/// read the member's and the hot wallet's balances, the transfer's entries and their sum,
/// and audit the journal.
#[tokio::test]
async fn confirmed_deposit_credits_exactly_the_amount() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    let consumer = RunningConsumer::start(&db, &vhost);
    let connection = vhost.connect().await;
    declare(&connection).await;

    let amount = "1234567890123456789012345678901234567891";
    assert!(amount.len() > u128::MAX.to_string().len());
    let event = confirmed("alice", "ETH", amount, 18);
    publish(&connection, &event).await;
    assert_eq!(wait_for_outcome(&db, event.id).await, "credited");

    assert_eq!(db.available("alice", "ETH").await, amount);
    assert_eq!(db.hot_wallet("ETH").await, amount);
    let entries: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT a.kind, coalesce(a.member_id, 'platform'), e.amount::text
           FROM entries e JOIN accounts a ON a.id = e.account_id
           JOIN deposit_credits d ON d.transfer_id = e.transfer_id
          WHERE d.deposit_id = $1 ORDER BY a.kind",
    )
    .bind(event.deposit_id)
    .fetch_all(&db.pool)
    .await
    .expect("entries");
    assert_eq!(
        entries,
        [
            (
                "available".to_owned(),
                "alice".to_owned(),
                format!("-{amount}")
            ),
            (
                "hot_wallet".to_owned(),
                "platform".to_owned(),
                amount.to_owned()
            ),
        ]
    );
    let sum: String = sqlx::query_scalar("SELECT sum(amount)::text FROM entries")
        .fetch_one(&db.pool)
        .await
        .expect("sum");
    assert_eq!(sum, "0");
    let decimals: i16 = sqlx::query_scalar("SELECT decimals FROM assets WHERE symbol = 'ETH'")
        .fetch_one(&db.pool)
        .await
        .expect("asset recorded");
    assert_eq!(decimals, 18);
    db.assert_consistent().await;
    consumer.stop().await;
}

/// Proves: the same event delivered twice credits once, and two different event ids for
/// the same deposit credit once.
///
/// Steps: start the consumer; publish event E twice (same id), then event F (new id, same
/// deposit id), then a sentinel deposit; wait for the sentinel (the queue is FIFO with one
/// consumer, so everything before it was handled); check one credit, outcomes, row counts,
/// and an empty queue.
#[tokio::test]
async fn duplicates_credit_once() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    let consumer = RunningConsumer::start(&db, &vhost);
    let connection = vhost.connect().await;
    declare(&connection).await;

    let event = confirmed("bob", "BTC", "250000000", 8);
    let same_deposit = DepositEvent {
        id: uuid::Uuid::new_v4(),
        ..event.clone()
    };
    publish(&connection, &event).await;
    publish(&connection, &event).await;
    publish(&connection, &same_deposit).await;
    let sentinel = confirmed("sentinel", "BTC", "1", 8);
    publish(&connection, &sentinel).await;
    assert_eq!(wait_for_outcome(&db, sentinel.id).await, "credited");

    assert_eq!(db.outcome(event.id).await.as_deref(), Some("credited"));
    assert_eq!(
        db.outcome(same_deposit.id).await.as_deref(),
        Some("deposit_already_credited")
    );
    assert_eq!(db.available("bob", "BTC").await, "250000000");
    assert_eq!(db.hot_wallet("BTC").await, "250000001");
    assert_eq!(db.count("transfers").await, 2);
    assert_eq!(db.count("deposit_credits").await, 2);
    assert_eq!(db.count("processed_messages").await, 3);
    let channel = connection.create_channel().await.expect("channel");
    wait_until("the deposits queue is empty", || async {
        ready_messages(&channel, DEPOSITS_QUEUE).await == 0
    })
    .await;
    db.assert_consistent().await;
    consumer.stop().await;
}

/// Proves: a garbage message and a wrong-version message go to `coinhub.dead-letter` with
/// the reason in `x-coinhub-reason`, and the consumer keeps going: a valid message
/// published after them is credited.
///
/// Steps: start the consumer; publish `not json` and a valid event rewritten to
/// `"version": 2` under `deposit.confirmed`, then a valid event; wait for the valid one;
/// fetch both dead letters and check body, reason and queue headers; nothing else credited.
#[tokio::test]
async fn poison_messages_are_dead_lettered_and_consumer_keeps_going() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    let consumer = RunningConsumer::start(&db, &vhost);
    let connection = vhost.connect().await;
    declare(&connection).await;

    publish_raw(
        &connection,
        routing::DEPOSIT_CONFIRMED,
        "garbage-1",
        b"not json".to_vec(),
    )
    .await;
    let mut v2 = serde_json::to_value(confirmed("mallory", "ETH", "5", 18)).expect("json");
    v2["version"] = 2.into();
    let v2_body = serde_json::to_vec(&v2).expect("json");
    publish_raw(
        &connection,
        routing::DEPOSIT_CONFIRMED,
        "version-2",
        v2_body.clone(),
    )
    .await;
    let valid = confirmed("carol", "ETH", "42", 18);
    publish(&connection, &valid).await;
    assert_eq!(wait_for_outcome(&db, valid.id).await, "credited");

    let channel = connection.create_channel().await.expect("channel");
    wait_until("two dead letters", || async {
        ready_messages(&channel, DEAD_LETTER_QUEUE).await == 2
    })
    .await;
    let mut dead = Vec::new();
    for _ in 0..2 {
        let message = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a dead letter");
        dead.push(message.delivery);
    }
    assert_eq!(dead[0].data, b"not json");
    let reason = header(&dead[0], headers::REASON).expect("reason header");
    assert!(reason.contains("malformed message"), "{reason}");
    assert_eq!(
        header(&dead[0], headers::QUEUE).as_deref(),
        Some(DEPOSITS_QUEUE)
    );
    assert_eq!(dead[0].routing_key.as_str(), routing::DEPOSIT_CONFIRMED);
    assert_eq!(dead[1].data, v2_body);
    let reason = header(&dead[1], headers::REASON).expect("reason header");
    assert!(reason.contains("unsupported message version 2"), "{reason}");

    assert_eq!(db.available("carol", "ETH").await, "42");
    assert_eq!(db.available("mallory", "ETH").await, "0");
    assert_eq!(db.count("processed_messages").await, 1);
    consumer.stop().await;
}

/// Wraps the real handler and simulates a crash right after its commit: closes the broker
/// connection before the consume loop can ack.
struct CrashAfterCommit {
    inner: DepositHandler,
    connection: Arc<Connection>,
}

impl Handler for CrashAfterCommit {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.inner.handle(delivery).await?;
        self.connection
            .close(320, "simulated crash after commit".into())
            .await
            .expect("close connection");
        Ok(())
    }
}

/// Records each delivery the real handler saw: (redelivered flag, result was Ok).
struct Recording {
    inner: DepositHandler,
    seen: Arc<Mutex<Vec<(bool, bool)>>>,
}

impl Handler for Recording {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let result = self.inner.handle(delivery).await;
        self.seen
            .lock()
            .expect("not poisoned")
            .push((delivery.redelivered, result.is_ok()));
        result
    }
}

/// Proves: a crash between commit and ack loses nothing and credits nothing twice: the
/// broker redelivers the message and the fresh consumer recognises its id.
///
/// Steps: publish a deposit; consume it with a handler that commits, then closes the
/// connection before the ack (the consume loop ends with an error); check it was credited
/// and is back in the queue; start a fresh consumer that records deliveries; wait for the
/// redelivery (flag set, handled OK); check the balance, transfers and processed ids are
/// unchanged and the queue is empty.
#[tokio::test]
async fn crash_between_commit_and_ack_does_not_credit_twice() {
    let (db, vhost) = (TestDb::new().await, TestVhost::new());
    let connection = Arc::new(vhost.connect().await);
    declare(&connection).await;
    let event = confirmed("dave", "USDT", "1000000", 6);
    publish(&connection, &event).await;

    let crashing = CrashAfterCommit {
        inner: DepositHandler::new(db.pool.clone()),
        connection: Arc::clone(&connection),
    };
    let options = ConsumerOptions {
        queue: DEPOSITS_QUEUE.to_owned(),
        consumer_tag: "crashing".to_owned(),
        prefetch: 1,
        retry_delay: Duration::from_millis(100),
    };
    let ended = tokio::time::timeout(
        common::WAIT_LIMIT,
        consumer::run(&connection, &options, &crashing),
    )
    .await
    .expect("consume loop ends after the crash");
    assert!(ended.is_err(), "the ack could not be sent: {ended:?}");
    assert_eq!(db.outcome(event.id).await.as_deref(), Some("credited"));
    assert_eq!(db.available("dave", "USDT").await, "1000000");

    let observer = vhost.connect().await;
    let channel = observer.create_channel().await.expect("channel");
    wait_until("the unacked message is back in the queue", || async {
        ready_messages(&channel, DEPOSITS_QUEUE).await == 1
    })
    .await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        inner: DepositHandler::new(db.pool.clone()),
        seen: Arc::clone(&seen),
    };
    let consumer = RunningConsumer::start_with(recording, &vhost);
    wait_until("the fresh consumer handled the redelivery", || async {
        !seen.lock().expect("not poisoned").is_empty()
    })
    .await;
    assert_eq!(*seen.lock().expect("not poisoned"), [(true, true)]);
    wait_until("the redelivery is acked", || async {
        ready_messages(&channel, DEPOSITS_QUEUE).await == 0
    })
    .await;

    assert_eq!(db.available("dave", "USDT").await, "1000000");
    assert_eq!(db.hot_wallet("USDT").await, "1000000");
    assert_eq!(db.count("transfers").await, 1);
    assert_eq!(db.count("processed_messages").await, 1);
    db.assert_consistent().await;
    consumer.stop().await;
}

/// Proves: the consumer survives outages: it keeps reconnecting while the broker vhost is
/// unavailable; while the database is unavailable it requeues the message (not
/// dead-letters it) and credits it once the database is back; when the broker drops its
/// connection it reconnects and keeps crediting.
///
/// Steps: start the consumer on a vhost that does not exist yet and a database that does
/// not exist yet (both fail); create the vhost and publish a deposit; wait until the
/// consumer has connected and failed on the database a few times; create and migrate the
/// database; wait for the credit (once); make the broker close all connections of the
/// vhost; publish another deposit on a new connection; wait for its credit; the
/// dead-letter queue stays empty.
#[tokio::test]
async fn survives_broker_and_database_outages() {
    let vhost = TestVhost::unregistered();
    let db = TestDb::unborn();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        inner: DepositHandler::new(db.pool.clone()),
        seen: Arc::clone(&seen),
    };
    let consumer = RunningConsumer::start_with(recording, &vhost);

    tokio::time::sleep(Duration::from_millis(1500)).await; // a few failed connection attempts
    vhost.register();
    let connection = vhost.connect().await;
    declare(&connection).await;
    let event = confirmed("erin", "ETH", "77", 18);
    publish(&connection, &event).await;
    wait_until(
        "the consumer connected and failed on the database at least twice",
        || async {
            seen.lock()
                .expect("not poisoned")
                .iter()
                .filter(|(_, ok)| !ok)
                .count()
                >= 2
        },
    )
    .await;

    db.create().await;
    migrate_while_the_consumer_retries(&db).await;
    assert_eq!(wait_for_outcome(&db, event.id).await, "credited");
    assert_eq!(
        seen.lock().expect("not poisoned").last(),
        Some(&(true, true))
    );
    assert_eq!(db.available("erin", "ETH").await, "77");
    assert_eq!(db.count("processed_messages").await, 1);

    // The broker drops every connection: the consumer reconnects and goes on.
    vhost.close_all_connections();
    wait_until("the broker closed the test's connection", || async {
        !connection.status().connected()
    })
    .await;
    let connection = vhost.connect().await;
    let after = confirmed("erin", "ETH", "23", 18);
    publish(&connection, &after).await;
    assert_eq!(wait_for_outcome(&db, after.id).await, "credited");
    assert_eq!(db.available("erin", "ETH").await, "100");
    let channel = connection.create_channel().await.expect("channel");
    assert_eq!(ready_messages(&channel, DEAD_LETTER_QUEUE).await, 0);
    consumer.stop().await;
}

/// Proves: after a migration fails, migrating again on the same pool succeeds and does not
/// wait forever for the migration lock of the failed attempt (sqlx keeps it in that
/// session; `db::migrate` closes the session), which `service::migrate_with_retry` relies on.
///
/// Steps: create an empty database with a table `transfers` of another shape, so migration
/// 0001 fails; soon no session holds an advisory lock on the database; drop the table
/// and migrate again, with a 30 s limit; the schema is there.
#[tokio::test]
async fn a_failed_migration_can_be_run_again_on_the_same_pool() {
    let db = TestDb::create_empty().await;
    sqlx::query("CREATE TABLE transfers (x int)")
        .execute(&db.pool)
        .await
        .expect("a table in the way");
    db::migrate(&db.pool)
        .await
        .expect_err("0001 cannot create transfers");
    // The session is closed by a Terminate message, which its server process handles after
    // `migrate` has returned: wait (boundedly) for the lock to go.
    wait_until(
        "the failed attempt's migration lock is released",
        || async {
            let advisory_locks: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            )
            .fetch_one(&db.pool)
            .await
            .expect("read pg_locks");
            advisory_locks == 0
        },
    )
    .await;
    sqlx::query("DROP TABLE transfers")
        .execute(&db.pool)
        .await
        .expect("clear the way");
    tokio::time::timeout(Duration::from_secs(30), db::migrate(&db.pool))
        .await
        .expect("the second attempt does not wait for a lock")
        .expect("migrations apply");
    assert_eq!(db.count("accounts").await, 0);
}

/// Migrates `db` while a consumer keeps retrying a deposit against it. The consumer's
/// transaction can deadlock with a migration that alters the tables it writes (0009 takes
/// `ACCESS EXCLUSIVE` on them); PostgreSQL then aborts one of the two, and a migration that
/// lost is run again, as `coinhub-exchange run` does (`service::migrate_with_retry`; there
/// the consumers start only after migrating, so it does not meet this race).
async fn migrate_while_the_consumer_retries(db: &TestDb) {
    const ATTEMPTS: u32 = 5;
    for attempt in 1..=ATTEMPTS {
        match db::migrate(&db.pool).await {
            Ok(()) => return,
            Err(sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(error), _))
                if attempt < ATTEMPTS && error.code().as_deref() == Some("40P01") => {}
            Err(error) => panic!("migrate the late database: {error:?}"),
        }
    }
}
