//! The trading engine against a real PostgreSQL (a fresh database per test; see
//! `common/mod.rs`): orders lock funds, trades settle exactly in the ledger, bad input changes
//! nothing, and a restart rebuilds identical books from the command log.

mod common;

use coinhub_exchange::deposits::{self, Outcome};
use coinhub_exchange::journal;
use coinhub_exchange::metrics::Metrics;
use coinhub_exchange::trading::{
    BookRebuild, EngineOptions, EventsSink, MemberId, NewOrder, OrderKind, Side, TimeInForce,
    TradingEngine, TradingError,
};
use common::trading::{assert_locked_equals_holds, count_projected, limit, markets};
use common::{TestDb, confirmed};

fn member(name: &str) -> MemberId {
    name.parse().expect("member id")
}

async fn deposit(db: &TestDb, who: &str, asset: &str, amount: &str) {
    let decimals = if asset == "BTC" { 8 } else { 6 };
    let outcome = deposits::apply(&db.pool, &confirmed(who, asset, amount, decimals))
        .await
        .expect("deposit applies");
    assert!(matches!(outcome, Outcome::Credited { .. }), "{outcome:?}");
}

async fn balance(db: &TestDb, who: &str, asset: &str, kind: &str) -> String {
    let member = member(who);
    let asset = common::asset_symbol(asset);
    let key = match kind {
        "available" => coinhub_exchange::ledger::AccountKey::available(member, asset),
        _ => coinhub_exchange::ledger::AccountKey::locked(member, asset),
    };
    journal::balance(&db.pool, &key)
        .await
        .expect("balance")
        .to_string()
}

async fn fee_revenue(db: &TestDb, asset: &str) -> String {
    let key = coinhub_exchange::ledger::AccountKey::fee_revenue(common::asset_symbol(asset));
    journal::balance(&db.pool, &key)
        .await
        .expect("balance")
        .to_string()
}

/// Proves: a limit sell and a crossing limit buy trade at the maker's price; locks, fees and
/// the fee account are exact to the base unit; cancel releases the rest; the journal audits
/// clean and the trade and order updates wait in `trading_event_batches` for `exchange.events`.
///
/// Steps: alice deposits 1 BTC, bob 1,000,000 USDT units; alice sells 5 lots at 100,000
/// (check her lock); bob buys 3 lots at 100,000 (taker); check every balance; alice cancels;
/// check again, and the views.
#[tokio::test]
async fn two_members_trade_with_exact_balances_and_fees() {
    let db = TestDb::new().await;
    deposit(&db, "alice", "BTC", "100000000").await;
    deposit(&db, "bob", "USDT", "1000000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));

    let sell = engine
        .place(&alice, limit(Side::Sell, "100000", "5000"))
        .await
        .expect("sell accepted");
    assert_eq!(sell.status, "open");
    assert_eq!(sell.hold, "5000");
    assert_eq!(balance(&db, "alice", "BTC", "locked").await, "5000");
    assert_eq!(balance(&db, "alice", "BTC", "available").await, "99995000");

    // Notional 1000 ticks × 100 × 3 lots = 300,000; taker fee 20 bps = 600, maker 10 bps = 300.
    let buy = engine
        .place(&bob, limit(Side::Buy, "100000", "3000"))
        .await
        .expect("buy accepted");
    assert_eq!(buy.status, "filled");
    assert_eq!(buy.filled, "3000");
    assert_eq!(buy.filled_quote, "300000");
    assert_eq!(buy.hold, "0");
    assert_eq!(balance(&db, "bob", "USDT", "available").await, "699400");
    assert_eq!(balance(&db, "bob", "USDT", "locked").await, "0");
    assert_eq!(balance(&db, "bob", "BTC", "available").await, "3000");
    assert_eq!(balance(&db, "alice", "BTC", "locked").await, "2000");
    assert_eq!(balance(&db, "alice", "USDT", "available").await, "299700");
    assert_eq!(fee_revenue(&db, "USDT").await, "900");

    let depth = engine.depth("btc_usdt", 10).expect("depth");
    assert_eq!(depth.asks, vec![("100000".to_owned(), "2000".to_owned())]);
    assert!(depth.bids.is_empty());

    let cancelled = engine
        .cancel(&alice, "btc_usdt", sell.id)
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(cancelled.filled, "3000");
    assert_eq!(balance(&db, "alice", "BTC", "locked").await, "0");
    assert_eq!(balance(&db, "alice", "BTC", "available").await, "99997000");

    let trades = engine.trades(&bob, None, 10).await.expect("trades");
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].liquidity, "taker");
    assert_eq!(trades[0].fee, "600");
    assert_eq!(trades[0].price, "100000");
    assert_eq!(trades[0].quantity, "3000");
    let alice_trades = engine
        .trades(&alice, Some("btc_usdt"), 10)
        .await
        .expect("trades");
    assert_eq!(alice_trades[0].liquidity, "maker");
    assert_eq!(alice_trades[0].fee, "300");
    assert!(
        engine
            .open_orders(&alice, None)
            .await
            .expect("open")
            .is_empty()
    );
    assert_eq!(
        engine
            .order_history(&alice, None, 10)
            .await
            .expect("history")
            .len(),
        1
    );

    let pending = coinhub_exchange::trading::events::pending_messages(&db.pool)
        .await
        .expect("stored messages render");
    let outbox: Vec<&str> = pending.iter().map(|(key, _, _)| key.as_str()).collect();
    assert_eq!(outbox.iter().filter(|k| **k == "trade.executed").count(), 1);
    assert!(outbox.contains(&"order.updated"));
    // The relay renders the stored batches to these JSON bodies; each body's `id` is its
    // AMQP message id.
    let json = |key: &str| -> Vec<serde_json::Value> {
        pending
            .iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, id, body)| {
                let value: serde_json::Value = serde_json::from_str(body).expect("JSON body");
                assert_eq!(value["id"], serde_json::json!(id), "body id = message id");
                assert_eq!(value["version"], 1);
                value
            })
            .collect()
    };
    let trade = &json("trade.executed")[0];
    for (field, expected) in [
        ("market", "btc_usdt"),
        ("price", "100000"),
        ("quantity", "3000"),
        ("quote_quantity", "300000"),
        ("maker_member", "alice"),
        ("taker_member", "bob"),
        ("taker_side", "buy"),
        ("maker_fee", "300"),
        ("taker_fee", "600"),
        ("fee_asset", "USDT"),
    ] {
        assert_eq!(trade[field], expected, "trade.executed {field}");
    }
    assert_eq!(trade["maker_order_id"], sell.id);
    assert_eq!(trade["taker_order_id"], buy.id);
    assert!(
        trade["occurred_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let alice_last = json("order.updated")
        .into_iter()
        .rev()
        .find(|update| update["member"] == "alice")
        .expect("alice's order updates");
    assert_eq!(alice_last["order"]["id"], sell.id);
    assert_eq!(alice_last["order"]["status"], "cancelled");
    assert_eq!(alice_last["order"]["filled"], "3000");
    assert_eq!(alice_last["order"]["hold"], "0");
    assert_eq!(alice_last["occurred_at"], alice_last["order"]["updated_at"]);
    db.assert_consistent().await;
}

/// Proves: a batch stored before migration 0013 (its messages as `events` text, one
/// `routing key TAB id TAB JSON` line each) is still read as it was written, and a row with
/// neither or both forms is refused.
///
/// Steps: insert such a row by hand; read the pending messages; try rows with no form and
/// with both.
#[tokio::test]
async fn batches_stored_as_text_are_still_published() {
    let db = TestDb::new().await;
    let text = "trade.executed\tid-1\t{\"a\":1}\norder.updated\tid-2\t{\"b\":2}\n";
    sqlx::query(
        "INSERT INTO trading_event_batches (market, first_seq, last_seq, event_count, events)
         VALUES ('btc_usdt', 1, 2, 2, $1)",
    )
    .bind(text)
    .execute(&db.pool)
    .await
    .expect("a text row");
    let pending = coinhub_exchange::trading::events::pending_messages(&db.pool)
        .await
        .expect("text rows read");
    let expected = [
        ("trade.executed", "id-1", "{\"a\":1}"),
        ("order.updated", "id-2", "{\"b\":2}"),
    ]
    .map(|(k, i, b)| (k.to_owned(), i.to_owned(), b.to_owned()));
    assert_eq!(pending, expected);
    for (events, outcome) in [(None, None), (Some("x"), Some(vec![1u8]))] {
        let refused = sqlx::query(
            "INSERT INTO trading_event_batches
                    (market, first_seq, last_seq, event_count, events, outcome)
             VALUES ('btc_usdt', 3, 3, 1, $1, $2)",
        )
        .bind(events)
        .bind(outcome)
        .execute(&db.pool)
        .await
        .expect_err("exactly one stored form");
        assert!(
            refused
                .to_string()
                .contains("trading_event_batches_one_form"),
            "{refused}"
        );
    }
}

/// A publisher with confirms on a fresh RabbitMQ vhost where `exchange.events` is declared,
/// as the relay has; keep the vhost and connection while publishing.
async fn relay_publisher() -> (
    common::TestVhost,
    lapin::Connection,
    coinhub_events::publisher::ConfirmingPublisher,
) {
    let vhost = common::TestVhost::new();
    let connection = vhost.connect().await;
    let publisher = coinhub_events::publisher::ConfirmingPublisher::open(&connection)
        .await
        .expect("channel");
    coinhub_exchange::trading::declare_exchange(publisher.channel())
        .await
        .expect("exchange");
    (vhost, connection, publisher)
}

/// Proves: a stored batch that does not decode is not published, not skipped and not a
/// panic: the relay returns `Malformed`, records the error on the row, and the row waits.
///
/// Steps: insert a row whose `outcome` is not a stored batch; run `publish_next_batch`
/// against a real broker; check the error, the row's `attempts` / `last_error`, and that it
/// is still unpublished.
#[tokio::test]
async fn a_batch_that_does_not_decode_waits_with_its_error() {
    use coinhub_events::outbox::OutboxError;
    use coinhub_exchange::trading::events;

    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO trading_event_batches (market, first_seq, last_seq, event_count, outcome)
         VALUES ('btc_usdt', 1, 1, 1, '\\xffff')",
    )
    .execute(&db.pool)
    .await
    .expect("a row that does not decode");
    let (_vhost, _connection, publisher) = relay_publisher().await;
    let error = events::publish_next_batch(&db.pool, &publisher, std::time::Duration::from_secs(5))
        .await
        .expect_err("nothing to publish from it");
    assert!(matches!(error, OutboxError::Malformed(_)), "{error:?}");
    let (attempts, last_error, published_at): (i32, Option<String>, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT attempts, last_error, published_at FROM trading_event_batches")
            .fetch_one(&db.pool)
            .await
            .expect("the row");
    assert_eq!(attempts, 1);
    assert!(
        last_error
            .as_deref()
            .is_some_and(|e| e.contains("do not decode")),
        "{last_error:?}"
    );
    assert_eq!(published_at, None);
    assert_eq!(events::unpublished(&db.pool).await.expect("count"), 1);
}

/// Proves: the relay publishes every stored `exchange.events` message exactly once and in
/// command order (batch by batch in `first_seq` order, whatever the rows' ids, line by
/// line), although each chunk's publishes are all queued before any is waited for
/// (`ConfirmingPublisher::publish_all`).
///
/// Steps: fund alice and bob; place 150 sells and 150 crossing buys at once (batches of
/// many commands, several hundred messages); give the stored batches ids in the reverse of
/// their command order; bind a queue to `exchange.events`; run `publish_next_batch` until
/// nothing waits; read the queue and compare the message ids with the stored ones, in
/// command order.
#[tokio::test]
async fn relayed_events_keep_their_stored_order() {
    use coinhub_exchange::trading::{self, events};
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    let db = TestDb::new().await;
    deposit(&db, "alice", "BTC", "100000000").await;
    deposit(&db, "bob", "USDT", "100000000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));
    let placed = futures::future::join_all((0..150).flat_map(|_| {
        [
            engine.place(&alice, limit(Side::Sell, "100000", "1000")),
            engine.place(&bob, limit(Side::Buy, "100000", "1000")),
        ]
    }))
    .await;
    assert!(placed.iter().all(Result::is_ok), "{placed:?}");
    let stored_ids: Vec<String> = events::pending_messages(&db.pool)
        .await
        .expect("stored messages render")
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert!(stored_ids.len() >= 450, "{} messages", stored_ids.len());
    let batches = db.count("trading_event_batches").await;
    assert!(batches >= 2, "the orders settled in {batches} batch(es)");
    // A batch's row may be inserted before the batch ahead of it (both are written at once):
    // give the rows ids in the reverse of their command order, so a relay taking rows by id
    // would publish the later batches first.
    sqlx::query(
        "WITH old AS (DELETE FROM trading_event_batches RETURNING *)
         INSERT INTO trading_event_batches
                (id, market, first_seq, last_seq, event_count, events, form, outcome, created_at)
         OVERRIDING SYSTEM VALUE
         SELECT 1000 + row_number() OVER (ORDER BY market, first_seq DESC), market,
                first_seq, last_seq, event_count, events, form, outcome, created_at
           FROM old",
    )
    .execute(&db.pool)
    .await
    .expect("ids reversed");

    let (_vhost, _connection, publisher) = relay_publisher().await;
    let channel = publisher.channel();
    channel
        .queue_declare(
            "relayed".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            "relayed".into(),
            trading::EXCHANGE_EVENTS.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let mut published = 0;
    loop {
        let sent =
            events::publish_next_batch(&db.pool, &publisher, std::time::Duration::from_secs(30))
                .await
                .expect("relay");
        if sent == 0 {
            break;
        }
        published += sent;
    }
    assert_eq!(published, stored_ids.len());
    assert_eq!(events::unpublished(&db.pool).await.expect("count"), 0);
    let mut received = Vec::new();
    while let Some(message) = channel
        .basic_get("relayed".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let id = message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .expect("message id");
        received.push(id.to_string());
    }
    assert_eq!(received, stored_ids);
}

/// Proves: every kind of bad input gets its typed error and changes nothing: no balance, no
/// command, no order.
///
/// Steps: fund alice and bob, let bob rest an order; snapshot balances and row counts; send
/// unknown market, zero / negative / fractional quantity, price off tick, quantity off lot,
/// insufficient funds (both sides), cancel of an unknown and of a foreign order; compare.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let db = TestDb::new().await;
    deposit(&db, "alice", "BTC", "10000").await;
    deposit(&db, "alice", "USDT", "1000").await;
    deposit(&db, "bob", "BTC", "10000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));
    let bobs = engine
        .place(&bob, limit(Side::Sell, "500000", "1000"))
        .await
        .expect("bob's order rests");

    let snapshot = || async {
        let mut balances = Vec::new();
        for who in ["alice", "bob"] {
            for b in journal::member_balances(&db.pool, &member(who))
                .await
                .expect("balances")
            {
                balances.push((b.account.to_string(), b.amount.to_string()));
            }
        }
        (
            balances,
            db.count("trading_command_batches").await,
            count_projected(&db, "orders").await,
            db.count("trading_event_batches").await,
        )
    };
    let before = snapshot().await;

    let mut unknown = limit(Side::Buy, "100", "1000");
    unknown.market = "doge_usdt".into();
    let cases: Vec<(NewOrder, &str)> = vec![
        (unknown, "unknown_market"),
        (limit(Side::Sell, "100", "0"), "invalid_quantity"),
        (limit(Side::Sell, "100", "-1000"), "invalid_quantity"),
        (limit(Side::Sell, "100", "1000.5"), "invalid_quantity"),
        (limit(Side::Sell, "0", "1000"), "invalid_quantity"),
        (limit(Side::Sell, "150", "1000"), "price_off_tick"),
        (limit(Side::Sell, "100", "1500"), "quantity_off_lot"),
        (limit(Side::Sell, "100", "11000"), "insufficient_funds"),
        // 1000 ticks × 100 × 1 lot = 100,000 USDT units > 1000 available.
        (limit(Side::Buy, "100000", "1000"), "insufficient_funds"),
        (
            NewOrder {
                kind: OrderKind::Market,
                price: None,
                quantity: None,
                quote_amount: Some("1000".into()),
                ..limit(Side::Sell, "0", "0")
            },
            "invalid_quantity",
        ),
        (
            NewOrder {
                time_in_force: Some(TimeInForce::Gtc),
                kind: OrderKind::Market,
                price: None,
                ..limit(Side::Sell, "0", "1000")
            },
            "invalid_quantity",
        ),
    ];
    for (order, code) in cases {
        let error = engine
            .place(&alice, order.clone())
            .await
            .expect_err(&format!("{order:?} is refused"));
        assert_eq!(error.code(), code, "{order:?}: {error}");
        assert!(error.is_client_error());
    }
    let unknown = engine
        .cancel(&alice, "btc_usdt", 999_999)
        .await
        .expect_err("unknown");
    assert!(
        matches!(unknown, TradingError::UnknownOrder(999_999)),
        "{unknown}"
    );
    let foreign = engine
        .cancel(&alice, "btc_usdt", bobs.id)
        .await
        .expect_err("foreign");
    assert_eq!(foreign.code(), "foreign_order");
    let wrong_market = engine
        .cancel(&bob, "eth_usdt", bobs.id)
        .await
        .expect_err("market");
    assert_eq!(wrong_market.code(), "unknown_market");

    assert_eq!(snapshot().await, before, "nothing changed");
    db.assert_consistent().await;
}

/// Proves: the matcher's own refusals (post-only that would cross, fill-or-kill that cannot
/// fill) are recorded as rejected orders and release their lock in the same transaction.
///
/// Steps: bob rests a sell; alice sends a crossing post-only buy and an unfillable FOK buy;
/// check the errors, then that alice's USDT is all available again.
#[tokio::test]
async fn matcher_rejections_release_the_lock() {
    let db = TestDb::new().await;
    deposit(&db, "alice", "USDT", "10000000").await;
    deposit(&db, "bob", "BTC", "10000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    engine
        .place(&member("bob"), limit(Side::Sell, "100000", "1000"))
        .await
        .expect("rests");
    let mut post_only = limit(Side::Buy, "100000", "1000");
    post_only.time_in_force = Some(TimeInForce::PostOnly);
    let error = engine
        .place(&member("alice"), post_only)
        .await
        .expect_err("crosses");
    match error {
        TradingError::Rejected { reason, order } => {
            assert_eq!(reason, "post_only_would_cross");
            assert_eq!(order.status, "rejected");
        }
        other => panic!("expected Rejected, got {other}"),
    }
    let mut fok = limit(Side::Buy, "100000", "2000");
    fok.time_in_force = Some(TimeInForce::Fok);
    let error = engine
        .place(&member("alice"), fok)
        .await
        .expect_err("unfillable");
    assert_eq!(error.code(), "rejected");
    assert_eq!(balance(&db, "alice", "USDT", "available").await, "10000000");
    assert_eq!(balance(&db, "alice", "USDT", "locked").await, "0");
    db.assert_consistent().await;
}

/// Proves: market orders by quantity and buy-by-quote settle exactly; the unspent part of the
/// lock returns to the buyer.
///
/// Steps: bob rests asks at 100,000 and 101,000 (1 lot each); alice market-buys 2 lots, then
/// bob rests one more and alice buys by quote 150,000; check balances.
#[tokio::test]
async fn market_orders_settle_exactly() {
    let db = TestDb::new().await;
    deposit(&db, "alice", "USDT", "10000000").await;
    deposit(&db, "bob", "BTC", "10000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));
    engine
        .place(&bob, limit(Side::Sell, "100000", "1000"))
        .await
        .expect("ask 1");
    engine
        .place(&bob, limit(Side::Sell, "101000", "1000"))
        .await
        .expect("ask 2");
    let market = NewOrder {
        kind: OrderKind::Market,
        price: None,
        ..limit(Side::Buy, "0", "2000")
    };
    let filled = engine.place(&alice, market).await.expect("market buy");
    assert_eq!(filled.status, "filled");
    // 201,000 notional + 20 bps taker fee (402) = 201,402.
    assert_eq!(balance(&db, "alice", "USDT", "available").await, "9798598");
    assert_eq!(balance(&db, "alice", "USDT", "locked").await, "0");
    assert_eq!(balance(&db, "alice", "BTC", "available").await, "2000");
    // Bob: 201,000 − 10 bps maker fee (100 + 101) = 200,799.
    assert_eq!(balance(&db, "bob", "USDT", "available").await, "200799");

    engine
        .place(&bob, limit(Side::Sell, "100000", "1000"))
        .await
        .expect("ask 3");
    let by_quote = NewOrder {
        kind: OrderKind::Market,
        price: None,
        quantity: None,
        quote_amount: Some("150000".into()),
        ..limit(Side::Buy, "0", "0")
    };
    let order = engine.place(&alice, by_quote).await.expect("buy by quote");
    // Buys 1 lot for 100,000 (+200 fee); the rest of the budget is returned.
    assert_eq!(order.filled, "1000");
    assert_eq!(order.status, "cancelled");
    assert_eq!(balance(&db, "alice", "USDT", "available").await, "9698398");
    assert_eq!(balance(&db, "alice", "USDT", "locked").await, "0");
    assert_eq!(
        fee_revenue(&db, "USDT").await,
        (402 + 201 + 200 + 100).to_string()
    );
    db.assert_consistent().await;
}

/// Proves: after a restart the books are rebuilt from the whole command log identical (depth
/// and open orders), trading continues, and no trade or order id is reused.
///
/// Steps: fund three members; place 60 deterministic crossing orders; record depth, open
/// orders and trade count; drop the engine and start a new one on the same database; compare;
/// place 20 more orders; check trade ids are unique and locked balances equal open holds.
#[tokio::test]
async fn restart_rebuilds_identical_books() {
    let rebuild = restart_case(EngineOptions::new(EventsSink::Outbox)).await;
    assert_eq!(rebuild.snapshot_seq, None, "no snapshot is due yet");
}

/// Proves: with a snapshot every 7 commands, a restart restores the newest snapshot, replays
/// only the commands after it, and the books come back identical (same steps as
/// [`restart_rebuilds_identical_books`]).
#[tokio::test]
async fn restart_from_a_snapshot_rebuilds_identical_books() {
    let options = EngineOptions {
        snapshot_every: 7,
        ..EngineOptions::new(EventsSink::Outbox)
    };
    let rebuild = restart_case(options).await;
    let snapshot_seq = rebuild.snapshot_seq.expect("restored from a snapshot");
    assert!(snapshot_seq >= 7, "snapshot after {snapshot_seq} commands");
}

/// The restart scenario; returns how the restarted engine rebuilt `btc_usdt`, after checking
/// it replayed exactly the logged commands after its snapshot.
async fn restart_case(options: EngineOptions) -> BookRebuild {
    let db = TestDb::new().await;
    let names = ["m1", "m2", "m3"];
    for who in names {
        deposit(&db, who, "BTC", "100000000").await;
        deposit(&db, who, "USDT", "100000000000").await;
    }
    let run = |engine: TradingEngine, from: u64, to: u64| async move {
        for i in from..to {
            let who = member(names[(i % 3) as usize]);
            let side = if (i * 7) % 2 == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = (1000 + (i * 37) % 11) * 100;
            let quantity = (1 + (i * 13) % 5) * 1000;
            let _ = engine
                .place(&who, limit(side, &price.to_string(), &quantity.to_string()))
                .await
                .expect("order accepted");
            if i % 10 == 9 {
                let open = engine.open_orders(&who, None).await.expect("open");
                if let Some(order) = open.last() {
                    engine
                        .cancel(&who, "btc_usdt", order.id)
                        .await
                        .expect("cancel");
                }
            }
        }
    };
    let engine = TradingEngine::start_with(db.pool.clone(), markets(), options.clone())
        .await
        .expect("engine starts");
    run(engine.clone(), 0, 60).await;
    let depth = engine.depth("btc_usdt", 100).expect("depth");
    // Snapshots are saved on their own task after a batch commits: wait for the last one due.
    // Every command here is awaited before the next is sent, so each batch holds one command
    // and snapshots fall on multiples of `snapshot_every`.
    let commands: i64 = sqlx::query_scalar("SELECT max(last_seq) FROM trading_command_batches")
        .fetch_one(&db.pool)
        .await
        .expect("log length");
    let commands = u64::try_from(commands).expect("positive");
    let due = commands - commands % options.snapshot_every;
    for _ in 0..500 {
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM trading_book_snapshots")
            .fetch_one(&db.pool)
            .await
            .expect("snapshots");
        if due == 0 || newest.is_some_and(|seq| u64::try_from(seq).expect("positive") >= due) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut open = Vec::new();
    for who in names {
        open.push(engine.open_orders(&member(who), None).await.expect("open"));
    }
    let trades = count_projected(&db, "trades").await;
    assert!(trades > 0, "the sequence trades");
    drop(engine);

    let engine = TradingEngine::start_with(db.pool.clone(), markets(), options)
        .await
        .expect("engine restarts");
    let rebuild = engine.book_rebuild("btc_usdt").expect("market");
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM trading_book_snapshots")
        .fetch_one(&db.pool)
        .await
        .expect("snapshots");
    let newest = newest.map(|seq| u64::try_from(seq).expect("positive"));
    assert_eq!(rebuild.snapshot_seq, newest, "restored the newest snapshot");
    assert_eq!(
        rebuild.replayed_commands,
        commands - newest.unwrap_or(0),
        "replayed exactly the commands after it"
    );
    assert_eq!(engine.depth("btc_usdt", 100).expect("depth"), depth);
    for (who, before) in names.iter().zip(&open) {
        assert_eq!(
            &engine.open_orders(&member(who), None).await.expect("open"),
            before
        );
    }
    assert_eq!(
        count_projected(&db, "trades").await,
        trades,
        "replay settles nothing again"
    );
    run(engine.clone(), 60, 80).await;
    let total = count_projected(&db, "trades").await;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT id) FROM trades")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(distinct, total);
    assert_locked_equals_holds(&db).await;
    db.assert_consistent().await;
    rebuild
}

/// Waits (up to 5 s) until at least `count` sessions of the test database match `condition`
/// (a `pg_stat_activity` condition).
async fn wait_for_sessions(db: &TestDb, condition: &str, count: i64, what: &str) {
    for _ in 0..500 {
        let matching: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND {condition}"
        ))
        .fetch_one(&db.pool)
        .await
        .expect("read activity");
        if matching >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Alice (BTC, and 1 USDT base unit so her USDT account is opened before bob's) rests a
/// 3,000-lot sell at 100,000; bob has 1,000,000 USDT to buy it. The engine counts its
/// batches in the returned metrics.
async fn start_deadlock_market(db: &TestDb) -> (TradingEngine, Metrics) {
    deposit(db, "alice", "BTC", "100000000").await;
    deposit(db, "alice", "USDT", "1").await;
    deposit(db, "bob", "USDT", "1000000").await;
    let metrics = Metrics::new();
    let options = EngineOptions::new(EventsSink::Outbox).with_metrics(metrics.clone());
    let engine = TradingEngine::start_with(db.pool.clone(), markets(), options)
        .await
        .expect("engine starts");
    engine
        .place(&member("alice"), limit(Side::Sell, "100000", "3000"))
        .await
        .expect("sell rests");
    (engine, metrics)
}

/// Asserts `metrics` renders each of `lines` (exactly) and promtool accepts the exposition.
fn assert_metrics(metrics: &Metrics, lines: &[&str]) {
    let exposition = metrics.render();
    for line in lines {
        assert!(
            exposition.lines().any(|l| l == *line),
            "{line} in:\n{exposition}"
        );
    }
    common::assert_promtool_accepts(&exposition);
}

/// Bob buys alice's sell while another transaction holds his USDT `available` account; once
/// his batch waits for it, runs `while_waiting`, then makes that transaction ask for alice's
/// USDT account (which bob's batch holds): a deadlock whose victim is bob's batch. Checks that
/// the batch ran again and settled exactly; returns `while_waiting`'s output.
async fn lose_a_deadlock<T>(
    db: &TestDb,
    engine: &TradingEngine,
    while_waiting: impl std::future::Future<Output = T>,
) -> T {
    let lock_account = |who: &'static str| {
        format!(
            "SELECT id FROM accounts WHERE member_id = '{who}' AND asset = 'USDT' \
             AND kind = 'available' FOR UPDATE"
        )
    };
    let mut other = db.pool.begin().await.expect("begin");
    sqlx::query(&lock_account("bob"))
        .fetch_one(&mut *other)
        .await
        .expect("lock bob's USDT");
    let buyer = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .place(&member("bob"), limit(Side::Buy, "100000", "3000"))
                .await
        })
    };
    wait_for_sessions(
        db,
        "wait_event_type = 'Lock'",
        1,
        "the engine's batch waits for bob's account",
    )
    .await;
    let output = while_waiting.await;
    sqlx::query(&lock_account("alice"))
        .fetch_one(&mut *other)
        .await
        .expect("the engine's batch is the deadlock victim; this transaction gets alice's account");
    other.commit().await.expect("commit");

    let buy = buyer
        .await
        .expect("task")
        .expect("the batch ran again and settled");
    assert_eq!(buy.status, "filled");
    assert_eq!(count_projected(db, "trades").await, 1);
    // Notional 300,000; bob pays + 600 taker fee; alice gets − 300 maker fee.
    assert_eq!(balance(db, "bob", "USDT", "available").await, "699400");
    assert_eq!(balance(db, "bob", "BTC", "available").await, "3000");
    assert_eq!(balance(db, "alice", "USDT", "available").await, "299701");
    assert_eq!(fee_revenue(db, "USDT").await, "900");
    output
}

/// A batch that loses a deadlock to a concurrent transaction is run again and settles: the
/// caller gets its fill, not an error, and the ledger is exact.
///
/// Steps: alice rests a sell; another transaction (standing in for another market's batch)
/// locks bob's USDT `available` account, which bob's buy will debit; bob buys: his batch's
/// ledger entries lock their accounts in id order, so it holds alice's USDT account (opened
/// before bob's) and waits for bob's; once the engine waits, the other transaction asks for
/// alice's USDT account: a deadlock, which PostgreSQL resolves by aborting the transaction
/// that waited first (the engine's, after `deadlock_timeout`). The other transaction then gets
/// its lock (proving the engine's batch was the one rolled back) and commits; the engine runs
/// the batch again and bob's buy fills once.
#[tokio::test]
async fn a_batch_that_loses_a_deadlock_runs_again() {
    let db = TestDb::new().await;
    let (engine, metrics) = start_deadlock_market(&db).await;
    lose_a_deadlock(&db, &engine, async {}).await;
    db.assert_consistent().await;
    // Alice's sell and bob's buy settled; bob's batch failed once and ran again.
    assert_metrics(
        &metrics,
        &[
            "coinhub_exchange_trading_batches_total{market=\"btc_usdt\"} 2",
            "coinhub_exchange_trading_commands_total{market=\"btc_usdt\"} 2",
            "coinhub_exchange_trading_trades_total{market=\"btc_usdt\"} 1",
            "coinhub_exchange_trading_settle_seconds_count{market=\"btc_usdt\"} 2",
            "coinhub_exchange_trading_batch_failures_total{market=\"btc_usdt\",outcome=\"retried\"} 1",
        ],
    );
}

/// Batches are written two at a time: when the older one does not commit, the one that ran
/// on top of it (its book and balances included the older one's effects) rolls back too, and
/// both run again, in order, each settling exactly once.
///
/// Steps: as in [`a_batch_that_loses_a_deadlock_runs_again`]; while bob's batch waits for his
/// account, carol places a sell, whose batch is matched and writes its own rows, then waits
/// for bob's batch to commit. The deadlock aborts bob's batch; carol's must not commit on its
/// own.
#[tokio::test]
async fn a_batch_written_on_top_of_a_failed_one_runs_again() {
    let db = TestDb::new().await;
    deposit(&db, "carol", "BTC", "5000").await;
    let (engine, metrics) = start_deadlock_market(&db).await;
    let carol = member("carol");
    // Carol's member number exists before the race, so her command goes straight to the book.
    engine
        .open_orders(&carol, None)
        .await
        .expect("carol has no open orders");
    // Yields carol's task, awaited after the deadlock.
    #[allow(clippy::async_yields_async)]
    let seller = async {
        let engine = engine.clone();
        let seller = tokio::spawn(async move {
            engine
                .place(&carol, limit(Side::Sell, "200000", "4000"))
                .await
        });
        // The test's transaction and carol's batch, which wrote its rows and waits for bob's
        // batch to commit.
        wait_for_sessions(
            &db,
            "state = 'idle in transaction'",
            2,
            "carol's batch is written",
        )
        .await;
        seller
    };
    let seller = lose_a_deadlock(&db, &engine, seller).await;
    let sell = seller
        .await
        .expect("task")
        .expect("carol's batch ran again");
    assert_eq!(sell.status, "open");
    // One row per order: carol's sell was neither written twice nor lost.
    assert_eq!(count_projected(&db, "orders").await, 3);
    let open = engine
        .open_orders(&member("carol"), None)
        .await
        .expect("open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, sell.id);
    assert_eq!(balance(&db, "carol", "BTC", "available").await, "1000");
    assert_eq!(balance(&db, "carol", "BTC", "locked").await, "4000");
    db.assert_consistent().await;
    // Bob's batch lost the deadlock and carol's, written on top of it, rolled back with it:
    // both ran again.
    assert_metrics(
        &metrics,
        &[
            "coinhub_exchange_trading_batches_total{market=\"btc_usdt\"} 3",
            "coinhub_exchange_trading_batch_failures_total{market=\"btc_usdt\",outcome=\"retried\"} 2",
        ],
    );
}

/// An unreadable snapshot is ignored: the restart replays the whole log and the book is the
/// same.
#[tokio::test]
async fn an_unreadable_snapshot_falls_back_to_the_whole_log() {
    let db = TestDb::new().await;
    deposit(&db, "alice", "BTC", "100000000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let alice = member("alice");
    for price in ["100000", "100100", "100200"] {
        engine
            .place(&alice, limit(Side::Sell, price, "1000"))
            .await
            .expect("sell rests");
    }
    let depth = engine.depth("btc_usdt", 10).expect("depth");
    drop(engine);
    sqlx::query(
        "INSERT INTO trading_book_snapshots (market, seq, orders, book)
         VALUES ('btc_usdt', 2, 1, 'not a book')",
    )
    .execute(&db.pool)
    .await
    .expect("insert a broken snapshot");

    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine restarts despite the broken snapshot");
    let rebuild = engine.book_rebuild("btc_usdt").expect("market");
    assert_eq!(rebuild.snapshot_seq, None);
    assert_eq!(rebuild.replayed_commands, 3);
    assert_eq!(rebuild.open_orders, 3);
    assert_eq!(engine.depth("btc_usdt", 10).expect("depth"), depth);
}

/// A fresh database where alice holds 1 BTC and bob 10 USDT, and an engine on it.
async fn alice_and_bob(events: EventsSink) -> (TestDb, TradingEngine, MemberId, MemberId) {
    let db = TestDb::new().await;
    deposit(&db, "alice", "BTC", "100000000").await;
    deposit(&db, "bob", "USDT", "10000000").await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), events)
        .await
        .expect("engine starts");
    (db, engine, member("alice"), member("bob"))
}

/// Holds back the projection of `btc_usdt` (takes the market's projection lock, as a
/// projector does) until the transaction ends.
async fn hold_projection(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = db.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('coinhub.trading_projection'), hashtext('btc_usdt'))",
    )
    .execute(&mut *holder)
    .await
    .expect("the projection lock");
    holder
}

/// Proves: projectors running at the same time (the engine's, and every reader catching up)
/// project each batch once.
///
/// Steps: hold the projection; settle three trades in three batches; start four catch-ups,
/// all waiting; release: each succeeds, and `orders` and `trades` hold each row once.
#[tokio::test]
async fn concurrent_projectors_project_each_batch_once() {
    let (db, engine, alice, bob) = alice_and_bob(EventsSink::Disabled).await;
    let holder = hold_projection(&db).await;
    engine
        .place(&alice, limit(Side::Sell, "100000", "3000"))
        .await
        .expect("sell rests");
    for _ in 0..3 {
        let buy = engine
            .place(&bob, limit(Side::Buy, "100000", "1000"))
            .await
            .expect("buy settles");
        assert_eq!(buy.status, "filled");
    }
    let catch_ups: Vec<_> = (0..4)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(
                async move { coinhub_exchange::trading::projection::catch_up_all(&pool).await },
            )
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        catch_ups.iter().all(|task| !task.is_finished()),
        "every projector waits for the lock"
    );
    holder.rollback().await.expect("release");
    for task in catch_ups {
        task.await
            .expect("task")
            .expect("a waiting projector succeeds");
    }
    assert_eq!(
        db.count("orders").await,
        4,
        "one sell, three buys, once each"
    );
    assert_eq!(db.count("trades").await, 3);
    assert_locked_equals_holds(&db).await;
}

/// Proves: `orders` and `trades` follow the commits. A batch is settled (answered, ledger
/// exact) before its rows are projected; the order history and trades wait for the projection
/// (read-your-writes); and batches settled but not yet projected when the process stops are
/// projected at the next start, once, with the books rebuilt from them.
///
/// Steps: hold the projection; alice sells, bob buys (filled): balances exact, no row yet;
/// bob's history waits until the projection is released, then shows the order and trade.
/// Hold it again; bob buys and alice rests a sell; stop the engine and end its waiting
/// projector's session (a crash); release: the rows are still missing; start again: every row
/// is there once, the book has alice's two sells, a new order and trade get new ids, locked
/// equals the open holds.
#[tokio::test]
async fn settled_batches_are_projected_after_commit_and_after_a_crash() {
    let (db, engine, alice, bob) = alice_and_bob(EventsSink::Outbox).await;

    let holder = hold_projection(&db).await;
    let sell = engine
        .place(&alice, limit(Side::Sell, "100000", "3000"))
        .await
        .expect("sell rests");
    let buy = engine
        .place(&bob, limit(Side::Buy, "100000", "1000"))
        .await
        .expect("buy settles");
    assert_eq!(buy.status, "filled");
    assert_eq!(balance(&db, "bob", "BTC", "available").await, "1000");
    assert_eq!(db.count("orders").await, 0, "not projected while held");
    assert_eq!(db.count("trades").await, 0, "not projected while held");
    let history = tokio::spawn({
        let (engine, bob) = (engine.clone(), bob.clone());
        async move { engine.order_history(&bob, None, 10).await }
    });
    let trades = tokio::spawn({
        let (engine, bob) = (engine.clone(), bob.clone());
        async move { engine.trades(&bob, None, 10).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !history.is_finished() && !trades.is_finished(),
        "history waits for the projection"
    );
    holder.rollback().await.expect("release");
    let history = history.await.expect("task").expect("history");
    assert_eq!(history, vec![buy.clone()], "bob's one order, as answered");
    let trades = trades.await.expect("task").expect("trades");
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].taker_order_id, buy.id);
    assert_eq!(
        (trades[0].quantity.as_str(), trades[0].fee.as_str()),
        ("1000", "200")
    );

    let holder = hold_projection(&db).await;
    let second = engine
        .place(&bob, limit(Side::Buy, "100000", "1000"))
        .await
        .expect("second buy settles");
    assert_eq!(second.status, "filled");
    let resting = engine
        .place(&alice, limit(Side::Sell, "101000", "1000"))
        .await
        .expect("a second sell rests");
    assert_eq!(resting.status, "open");
    let depth = engine.depth("btc_usdt", 10).expect("depth");
    drop(engine);
    // The stopped engine's projector waits for the watermark; end its session as a crash
    // would, and give it time to see that its engine is gone.
    for _ in 0..3 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND pid <> pg_backend_pid()",
        )
        .execute(&db.pool)
        .await
        .expect("terminate");
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    holder.rollback().await.expect("release");
    assert_eq!(
        db.count("orders").await,
        2,
        "the last two batches were not projected"
    );
    assert_eq!(db.count("trades").await, 1);

    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts again");
    assert_eq!(db.count("orders").await, 4, "projected at start, once");
    assert_eq!(db.count("trades").await, 2);
    let open = engine.open_orders(&alice, None).await.expect("open");
    // Alice's first sell, 2 of its 3 lots filled, and her second.
    assert_eq!(
        open.iter()
            .map(|o| (o.id, o.filled.as_str()))
            .collect::<Vec<_>>(),
        [(resting.id, "0"), (sell.id, "2000")]
    );
    assert_eq!(engine.depth("btc_usdt", 10).expect("depth"), depth);
    let history = engine.order_history(&bob, None, 10).await.expect("history");
    assert_eq!(history, vec![second.clone(), buy.clone()]);
    // Ids continue after the projected ones: nothing is reused.
    let third = engine
        .place(&bob, limit(Side::Buy, "100000", "1000"))
        .await
        .expect("a buy after the restart");
    assert_eq!(
        third.status, "filled",
        "takes the last lot of alice's first sell"
    );
    assert!(third.id > resting.id, "order id {} reused", third.id);
    let trades = engine.trades(&bob, None, 10).await.expect("trades");
    let ids: Vec<u64> = trades.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "distinct, newest first: {ids:?}"
    );
    assert_eq!(trades[0].taker_order_id, third.id);
    assert_locked_equals_holds(&db).await;
    db.assert_consistent().await;
}

/// Proves: with no events published (`EventsSink::Disabled`), a settled batch still writes
/// its outcome row, already marked published (the relay has nothing to send), and `orders`
/// and `trades` are projected from it.
///
/// Steps: alice sells, bob buys; the order history and trades show the trade; every outcome
/// row is marked published with its full count; nothing waits for the relay.
#[tokio::test]
async fn without_events_orders_and_trades_are_still_projected() {
    let (db, engine, alice, bob) = alice_and_bob(EventsSink::Disabled).await;
    let sell = engine
        .place(&alice, limit(Side::Sell, "100000", "1000"))
        .await
        .expect("sell rests");
    let buy = engine
        .place(&bob, limit(Side::Buy, "100000", "1000"))
        .await
        .expect("buy settles");
    assert_eq!(buy.status, "filled");
    let trades = engine.trades(&alice, None, 10).await.expect("trades");
    assert_eq!(trades.len(), 1);
    assert_eq!(
        (trades[0].maker_order_id, trades[0].taker_order_id),
        (sell.id, buy.id)
    );
    let history = engine
        .order_history(&alice, None, 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].id, history[0].status.as_str()),
        (sell.id, "filled")
    );
    let unpublished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM trading_event_batches
          WHERE published_at IS NULL OR published <> event_count",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(unpublished, 0, "nothing for the relay");
    assert!(
        db.count("trading_event_batches").await >= 1,
        "outcome rows written"
    );
    assert_eq!(
        coinhub_exchange::trading::events::unpublished(&db.pool)
            .await
            .expect("unpublished"),
        0
    );
    assert_locked_equals_holds(&db).await;
    db.assert_consistent().await;
}

/// Proves: retention deletes exactly the published rows nobody needs any more: a batch
/// outcome once published **and** projected and older than the retention, a withdrawal
/// request once published and older; it keeps recent rows, outcomes still unpublished and
/// outcomes not yet projected (whatever their age), and the engine still projects and
/// restarts from what is left.
///
/// Steps: alice sells, bob buys (batches 1, 2, projected); hold the projection; alice rests
/// two more sells (batches 3, 4, settled, not projected); the relay publishes batches 1–3
/// against a real broker; confirmations of batches 1 and 3 are dated two hours back. Three
/// outbox rows: published two hours ago, published now, unpublished from two hours ago.
/// Prune with one hour: exactly batch 1 and the old published request go. Release: the
/// history shows all four orders (3 and 4 projected from their kept rows); prune again:
/// batch 3 goes; restart the engine: same book, new ids, ledger consistent.
#[tokio::test]
async fn only_published_and_projected_rows_are_pruned() {
    use coinhub_exchange::retention::{self, Pruned};
    use coinhub_exchange::trading::events;
    use std::time::Duration;

    let (db, engine, alice, bob) = alice_and_bob(EventsSink::Outbox).await;
    engine
        .place(&alice, limit(Side::Sell, "100000", "1000"))
        .await
        .expect("sell");
    engine
        .place(&bob, limit(Side::Buy, "100000", "1000"))
        .await
        .expect("buy");
    engine.trades(&bob, None, 10).await.expect("caught up");
    let holder = hold_projection(&db).await;
    for price in ["101000", "102000"] {
        engine
            .place(&alice, limit(Side::Sell, price, "1000"))
            .await
            .expect("sell rests");
    }
    let (_vhost, _connection, publisher) = relay_publisher().await;
    for _ in 0..3 {
        let sent = events::publish_next_batch(&db.pool, &publisher, Duration::from_secs(10))
            .await
            .expect("published");
        assert!(sent > 0);
    }
    let backdate = |first_seq: i64| {
        sqlx::query(
            "UPDATE trading_event_batches SET published_at = now() - interval '2 hours'
              WHERE first_seq = $1 AND published_at IS NOT NULL",
        )
        .bind(first_seq)
        .execute(&db.pool)
    };
    for first_seq in [1, 3] {
        let updated = backdate(first_seq).await.expect("backdate");
        assert_eq!(
            updated.rows_affected(),
            1,
            "batch {first_seq} was published"
        );
    }
    let mut tx = db.pool.begin().await.expect("begin");
    let requests = [
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    ];
    for id in requests {
        coinhub_exchange::outbox::enqueue(
            &mut tx,
            "coinhub.commands",
            "withdrawal.request",
            id,
            &serde_json::json!({ "id": id }),
        )
        .await
        .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    for (id, published_at, created_at) in [
        (
            requests[0],
            "now() - interval '2 hours'",
            "now() - interval '3 hours'",
        ),
        (requests[1], "now()", "now() - interval '3 hours'"),
        (requests[2], "NULL", "now() - interval '3 hours'"),
    ] {
        sqlx::query(&format!(
            "UPDATE outbox SET published_at = {published_at}, created_at = {created_at}
              WHERE id = $1"
        ))
        .bind(id)
        .execute(&db.pool)
        .await
        .expect("date the request");
    }

    let hour = Duration::from_secs(3_600);
    let pruned = retention::prune_published(&db.pool, hour)
        .await
        .expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            outbox: 1,
            trading_event_batches: 1
        }
    );
    let kept: Vec<i64> =
        sqlx::query_scalar("SELECT first_seq FROM trading_event_batches ORDER BY first_seq")
            .fetch_all(&db.pool)
            .await
            .expect("kept batches");
    assert_eq!(kept, [2, 3, 4], "recent, not projected, unpublished");
    let kept: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY seq")
        .fetch_all(&db.pool)
        .await
        .expect("kept requests");
    assert_eq!(kept, requests[1..], "recent and unpublished requests stay");

    holder.rollback().await.expect("release");
    let history = engine
        .order_history(&alice, None, 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 3, "alice's three sells, all projected");
    assert_eq!(count_projected(&db, "orders").await, 4);
    let pruned = retention::prune_published(&db.pool, hour)
        .await
        .expect("prune");
    assert_eq!(
        pruned,
        Pruned {
            outbox: 0,
            trading_event_batches: 1
        },
        "batch 3, projected now"
    );

    let depth = engine.depth("btc_usdt", 10).expect("depth");
    drop(engine);
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine restarts after pruning");
    assert_eq!(engine.depth("btc_usdt", 10).expect("depth"), depth);
    let next = engine
        .place(&bob, limit(Side::Buy, "101000", "1000"))
        .await
        .expect("a buy after the restart");
    assert_eq!(next.status, "filled");
    assert!(
        history.iter().all(|order| order.id < next.id),
        "ids are not reused"
    );
    assert_locked_equals_holds(&db).await;
    db.assert_consistent().await;
}

/// Proves: batches of two markets that share their members' USDT accounts, written at once
/// and pipelined, with members whose accounts are opened by those very batches, all settle:
/// no batch waits for another forever (the accounts a batch opens are committed before its
/// transaction; its entries are applied in account-id order after the batch ahead of it), and
/// the ledger stays exact. With the accounts opened inside the batches' transactions instead,
/// one run in five hung here (checked, 2026-12-07).
///
/// Steps: 30 new members each deposit BTC, ETH and USDT; all at once, each places a sell and a
/// crossing buy on `btc_usdt` and on `eth_usdt` (120 orders; self-trade prevention may cancel
/// some). Every order is answered within 60 s; the trades settled count matches the trades
/// rows; fee revenue equals the trades' fees; locked equals the open orders' holds; USDT
/// over all accounts still equals the hot wallet's; the journal audits clean.
#[tokio::test]
async fn two_markets_over_shared_new_accounts_settle_together() {
    let db = TestDb::new().await;
    let mut config = markets();
    config.0.insert(
        "eth_usdt".to_owned(),
        common::trading::market("ETH", "USDT"),
    );
    let members: Vec<String> = (0..30).map(|i| format!("member{i:02}")).collect();
    for who in &members {
        deposit(&db, who, "BTC", "100000").await;
        deposit(&db, who, "USDT", "100000000").await;
        let eth = confirmed(who, "ETH", "100000", 18);
        deposits::apply(&db.pool, &eth).await.expect("ETH deposit");
    }
    let engine = TradingEngine::start(db.pool.clone(), config, EventsSink::Outbox)
        .await
        .expect("engine starts");
    let order = |market: &str, side: Side| NewOrder {
        market: market.into(),
        ..limit(side, "100000", "1000")
    };
    let mut orders = Vec::new();
    for who in &members {
        for market in ["btc_usdt", "eth_usdt"] {
            for side in [Side::Sell, Side::Buy] {
                let (engine, who, order) = (engine.clone(), member(who), order(market, side));
                orders.push(async move { engine.place(&who, order).await });
            }
        }
    }
    let placed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures::future::join_all(orders),
    )
    .await
    .expect("every order is answered: no batch waits forever");
    assert_eq!(placed.len(), 120);
    assert!(placed.iter().all(Result::is_ok), "{placed:?}");

    let trades = count_projected(&db, "trades").await;
    let fees: (String, String) = sqlx::query_as(
        "SELECT coalesce(sum(maker_fee), 0)::text, coalesce(sum(taker_fee), 0)::text
           FROM trades WHERE fee_asset = 'USDT'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("fees");
    assert!(trades > 0, "crossing orders traded");
    let fee_sum = fees.0.parse::<u128>().expect("maker") + fees.1.parse::<u128>().expect("taker");
    assert_eq!(fee_revenue(&db, "USDT").await, fee_sum.to_string());
    let usdt: (String, String) = sqlx::query_as(
        "SELECT coalesce(sum(balance) FILTER (WHERE normal_side = 'credit'), 0)::text,
                coalesce(sum(balance) FILTER (WHERE normal_side = 'debit'), 0)::text
           FROM accounts WHERE asset = 'USDT'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("USDT sums");
    assert_eq!(
        usdt.0, usdt.1,
        "members' and revenue USDT equal the hot wallet's"
    );
    assert_eq!(usdt.1, (100_000_000_u128 * 30).to_string());
    assert_locked_equals_holds(&db).await;
    db.assert_consistent().await;
}

/// Migrates `db` (empty) with the migrations whose names sort before `first_left_out`, as a
/// database of an earlier release would be.
async fn migrate_before(db: &TestDb, first_left_out: &str) {
    let earlier = std::env::temp_dir().join(format!("coinhub-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&earlier).expect("a temporary folder");
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&migrations).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() < first_left_out {
            std::fs::copy(&path, earlier.join(&name)).expect("copy");
        }
    }
    sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .expect("earlier migrations")
        .run(&db.pool)
        .await
        .expect("migrate to the earlier release");
    std::fs::remove_dir_all(&earlier).expect("clean up");
}

/// Proves: a ledger written before this release's ledger migrations (0020–0026: sums recorded
/// per statement, functions planned by key, column guards, entries keyed by transfer, deltas
/// queued, one-update application) upgrades with its balances and audit intact, and trades
/// settle exactly on it afterwards.
///
/// Steps: migrate an empty database to 0019; credit alice BTC and bob USDT by deposits (the
/// old triggers apply them); migrate to the latest; check balances and the audit; trade 3 lots
/// at 1000 ticks through the engine; check every balance and the fee account to the base
/// unit, and the audit again.
#[tokio::test]
async fn a_ledger_from_before_0020_upgrades_and_trades_exactly() {
    let db = TestDb::create_empty().await;
    migrate_before(&db, "0020").await;
    deposit(&db, "alice", "BTC", "100000000").await;
    deposit(&db, "bob", "USDT", "1000000").await;
    coinhub_exchange::db::migrate(&db.pool)
        .await
        .expect("0020 and later apply to a ledger with entries");
    assert_eq!(balance(&db, "alice", "BTC", "available").await, "100000000");
    assert_eq!(balance(&db, "bob", "USDT", "available").await, "1000000");
    db.assert_consistent().await;

    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));
    engine
        .place(&alice, limit(Side::Sell, "100000", "3000"))
        .await
        .expect("sell accepted");
    let buy = engine
        .place(&bob, limit(Side::Buy, "100000", "3000"))
        .await
        .expect("buy accepted");
    assert_eq!(buy.status, "filled");
    // Notional 300,000; taker fee 20 bps = 600, maker 10 bps = 300.
    assert_eq!(balance(&db, "alice", "BTC", "available").await, "99997000");
    assert_eq!(balance(&db, "alice", "BTC", "locked").await, "0");
    assert_eq!(balance(&db, "alice", "USDT", "available").await, "299700");
    assert_eq!(balance(&db, "bob", "BTC", "available").await, "3000");
    assert_eq!(balance(&db, "bob", "USDT", "available").await, "699400");
    assert_eq!(balance(&db, "bob", "USDT", "locked").await, "0");
    assert_eq!(fee_revenue(&db, "USDT").await, "900");
    db.assert_consistent().await;
}

/// Proves: `orders` and `trades` rows written before 0019 (without member numbers) are found
/// by member after every migration: 0019 gives them their members' numbers and 0030 their
/// posting lists (`orders_by_member`, `trades_by_member`), which the order history and the
/// trades read; and `trades` stays append-only after those backfills.
///
/// Steps: migrate a fresh database up to 0018; write two members, an order of alice's and a
/// trade of alice (maker) with bob (taker) as the engine did; run every migration; start the
/// engine; alice's history holds her order, the trade is alice's as maker and bob's as taker;
/// an update of the trade is refused.
#[tokio::test]
async fn rows_from_before_0019_are_found_by_member_after_every_migration() {
    let db = TestDb::create_empty().await;
    migrate_before(&db, "0019").await;
    sqlx::raw_sql(
        "INSERT INTO trading_members (member_id) VALUES ('alice'), ('bob');
         INSERT INTO orders (id, market, member_id, side, kind, price, quantity, filled,
                             filled_quote, hold, hold_asset, status, seq, created_at, updated_at)
         VALUES (1, 'btc_usdt', 'alice', 'sell', 'limit', 100000, 1000, 1000, 100000, 0, 'BTC',
                 'filled', 1, now(), now());
         INSERT INTO trades (id, market, seq, ordinal, price, quantity, quote_quantity,
                             maker_order_id, taker_order_id, maker_member, taker_member,
                             taker_side, maker_fee, taker_fee, fee_asset, created_at)
         VALUES (1, 'btc_usdt', 2, 0, 100000, 1000, 100000, 1, 2, 'alice', 'bob', 'buy', 100,
                 200, 'USDT', now());",
    )
    .execute(&db.pool)
    .await
    .expect("rows as written before 0019");

    coinhub_exchange::db::migrate(&db.pool)
        .await
        .expect("0019 and later apply");
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));
    let history = engine
        .order_history(&alice, None, 10)
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(|o| o.id).collect::<Vec<_>>(),
        [1],
        "alice's order is found by her number"
    );
    let alices = engine.trades(&alice, None, 10).await.expect("trades");
    let bobs = engine.trades(&bob, None, 10).await.expect("trades");
    assert_eq!(
        (alices.len(), alices[0].id, alices[0].liquidity.as_str()),
        (1, 1, "maker")
    );
    assert_eq!(
        (bobs.len(), bobs[0].id, bobs[0].liquidity.as_str()),
        (1, 1, "taker")
    );
    assert!(
        engine
            .order_history(&bob, None, 10)
            .await
            .expect("history")
            .is_empty(),
        "bob placed no order before the migration"
    );
    let edit = sqlx::query("UPDATE trades SET maker_fee = 0")
        .execute(&db.pool)
        .await;
    assert!(
        edit.is_err(),
        "trades are append-only again after the backfill"
    );
}

/// Proves: the order history and the trades list a member's newest rows across markets and
/// projections, newest first, whatever the limit and the market filter (they are read through
/// posting lists, one row per member, market and projection, whose id ranges overlap across
/// markets: migration 0030).
///
/// Steps: two markets; 12 rounds, every third on eth_usdt: bob sells 1 lot, alice buys it
/// (one trade). btc_usdt is projected after every round; eth_usdt only at the end (the test
/// holds its projection lock meanwhile), so each member has one btc_usdt posting row a round
/// and one eth_usdt row whose ids span them all.
/// Then each member's history and trades at limits 1, 5 and all, with and without the market
/// filter, are exactly the newest ids of the answers, descending.
#[tokio::test]
async fn history_and_trades_are_the_newest_rows_across_markets_and_projections() {
    let db = TestDb::new().await;
    deposit(&db, "alice", "USDT", "1000000000").await;
    deposit(&db, "bob", "BTC", "100000000").await;
    deposit(&db, "bob", "ETH", "100000000").await;
    let mut config = markets();
    config.0.insert(
        "eth_usdt".to_owned(),
        common::trading::market("ETH", "USDT"),
    );
    let engine = TradingEngine::start(db.pool.clone(), config, EventsSink::Outbox)
        .await
        .expect("engine starts");
    let (alice, bob) = (member("alice"), member("bob"));
    // (market, order id) of each member's orders.
    let (mut alices, mut bobs) = (Vec::new(), Vec::new());
    // The key the projector locks a market's projection with (`projection.rs`).
    const ETH_PROJECTION: &str = "(hashtext('coinhub.trading_projection'), hashtext('eth_usdt'))";
    let mut holder = db.pool.acquire().await.expect("a connection");
    sqlx::query(&format!("SELECT pg_advisory_lock{ETH_PROJECTION}"))
        .execute(&mut *holder)
        .await
        .expect("eth_usdt's projection held");
    for round in 0..12 {
        let market = if round % 3 == 0 {
            "eth_usdt"
        } else {
            "btc_usdt"
        };
        let on = |side| NewOrder {
            market: market.into(),
            ..limit(side, "100000", "1000")
        };
        let sell = engine.place(&bob, on(Side::Sell)).await.expect("sell");
        let buy = engine.place(&alice, on(Side::Buy)).await.expect("buy");
        assert_eq!(buy.status, "filled", "round {round}");
        bobs.push((market, sell.id));
        alices.push((market, buy.id));
        coinhub_exchange::trading::projection::catch_up(&db.pool, "btc_usdt")
            .await
            .expect("btc_usdt projected");
    }
    let eth_projected: i64 = sqlx::query_scalar(
        "SELECT projected_seq FROM trading_projection WHERE market = 'eth_usdt'",
    )
    .fetch_one(&mut *holder)
    .await
    .expect("watermark");
    assert_eq!(eth_projected, 0, "no eth_usdt batch projected while held");
    sqlx::query(&format!("SELECT pg_advisory_unlock{ETH_PROJECTION}"))
        .execute(&mut *holder)
        .await
        .expect("eth_usdt's projection released");
    drop(holder);
    common::trading::project(&db).await;
    // Every trade is alice's (taker) and bob's (maker).
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT market, id FROM trades")
        .fetch_all(&db.pool)
        .await
        .expect("trades");
    assert_eq!(rows.len(), 12, "one trade a round");
    let trades: Vec<(&str, u64)> = rows
        .iter()
        .map(|(market, id)| (market.as_str(), u64::try_from(*id).expect("positive")))
        .collect();
    let newest = |rows: &[(&str, u64)], market: Option<&str>, limit: usize| -> Vec<u64> {
        let mut ids: Vec<u64> = rows
            .iter()
            .filter(|(m, _)| market.is_none_or(|want| want == *m))
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        ids
    };
    for market in [None, Some("btc_usdt"), Some("eth_usdt")] {
        for limit in [1, 5, 100] {
            for (who, orders) in [(&alice, &alices), (&bob, &bobs)] {
                let history = engine
                    .order_history(who, market, limit)
                    .await
                    .expect("history");
                assert_eq!(
                    history.iter().map(|o| o.id).collect::<Vec<_>>(),
                    newest(orders, market, limit as usize),
                    "{who:?}'s orders in {market:?}, limit {limit}"
                );
                let listed = engine.trades(who, market, limit).await.expect("trades");
                assert_eq!(
                    listed.iter().map(|t| t.id).collect::<Vec<_>>(),
                    newest(&trades, market, limit as usize),
                    "{who:?}'s trades in {market:?}, limit {limit}"
                );
            }
        }
    }
}
