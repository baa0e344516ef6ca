//! Trading through the member HTTP API over real PostgreSQL: two members trade against
//! each other with exact balances and fees; every bad order or cancel is refused with its
//! code and changes nothing. The engine runs in-process with its events in the outbox.
//!
//! Market `btc_usdt`: BTC (8 decimals) against USDT (6 decimals), lot 1000 sat, tick 1000
//! USDT base units per lot, maker fee 10 bps, taker fee 20 bps. A price is USDT base units
//! per lot: `30_000_000` is 30 USDT per 1000 sat (30,000 USDT per BTC).

mod api_support;
mod common;

use std::collections::BTreeMap;

use api_support::{TestApi, fund, rows, snapshot};
use coinhub_exchange::api::client::{ApiClient, ClientError};
use coinhub_exchange::config::AssetsConfig;
use coinhub_exchange::journal;
use coinhub_exchange::ledger::AccountKey;
use coinhub_exchange::markets::{MarketConfig, MarketsConfig, UnitsValue};
use coinhub_exchange::trading::{EventsSink, NewOrder, Side, TimeInForce, TradingEngine};
use common::trading::limit;
use common::{TestDb, asset_symbol};
use reqwest::Method;

const MARKET: &str = "btc_usdt";
/// 30 USDT per lot of 1000 sat.
const PRICE: &str = "30000000";

fn markets() -> MarketsConfig {
    MarketsConfig(BTreeMap::from([(
        MARKET.to_owned(),
        MarketConfig {
            base: "BTC".into(),
            quote: "USDT".into(),
            tick_size: UnitsValue::Text("1000".into()),
            lot_size: UnitsValue::Text("1000".into()),
            min_quantity: None,
            maker_fee_bps: 10,
            taker_fee_bps: 20,
        },
    )]))
}

/// Funds alice with 10000 sat and bob with 100 USDT, then starts the engine and the API.
async fn start(db: &TestDb) -> (TestApi, ApiClient, ApiClient) {
    fund(&db.pool, "alice", "BTC", "10000", 8).await;
    fund(&db.pool, "bob", "USDT", "100000000", 6).await;
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let api = TestApi::start(db.pool.clone(), AssetsConfig::default(), Some(engine)).await;
    let alice = api.client("alice").await;
    let bob = api.client("bob").await;
    (api, alice, bob)
}

async fn fee_revenue(db: &TestDb, asset: &str) -> String {
    journal::balance(&db.pool, &AccountKey::fee_revenue(asset_symbol(asset)))
        .await
        .expect("read balance")
        .to_string()
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, status: u16, code: &str) {
    let error = result.expect_err("refused");
    assert_eq!(
        (error.status(), error.code()),
        (Some(status), Some(code)),
        "{error}"
    );
}

/// Proves: two members trade over HTTP and every balance and the fee account are exact to
/// the base unit; open orders, history, trades, depth and markets show the same; a cancel
/// releases the rest of the hold.
///
/// Steps: alice sells 5000 sat at 30 USDT/lot (rests: 5000 sat locked; depth shows the
/// ask); bob buys 3000 sat at the same price (taker: 3 lots, notional 90 USDT = 90000000;
/// bob pays 90000000 + 0.2 % = 90180000, alice receives 90000000 - 0.1 % = 89910000, fee
/// revenue 270000). Then alice cancels the remaining 2000 sat, which return to available.
#[tokio::test]
async fn two_members_trade_with_exact_balances_and_fees() {
    let db = TestDb::new().await;
    let (api, alice, bob) = start(&db).await;

    let markets = api.public().markets().await.expect("markets");
    assert_eq!(markets.len(), 1);
    assert_eq!(
        (
            markets[0].name.as_str(),
            markets[0].base.as_str(),
            markets[0].quote.as_str()
        ),
        (MARKET, "BTC", "USDT")
    );
    assert_eq!(
        (markets[0].maker_fee_bps, markets[0].taker_fee_bps),
        (10, 20)
    );

    let ask = alice
        .place_order(&limit(Side::Sell, PRICE, "5000"))
        .await
        .expect("alice's ask accepted");
    assert_eq!(ask.status, "open");
    assert_eq!(ask.filled, "0");
    assert_eq!(
        rows(&alice.balances().await.expect("balances").balances),
        [("BTC".into(), 8, "5000".into(), "5000".into())]
    );
    let depth = api.public().depth(MARKET, Some(10)).await.expect("depth");
    assert_eq!(depth.asks, [(PRICE.to_owned(), "5000".to_owned())]);
    assert!(depth.bids.is_empty());
    let open = alice.open_orders(Some(MARKET)).await.expect("open orders");
    assert_eq!(open.iter().map(|o| o.id).collect::<Vec<_>>(), [ask.id]);
    assert!(bob.open_orders(None).await.expect("open orders").is_empty());

    let bid = bob
        .place_order(&NewOrder {
            time_in_force: Some(TimeInForce::Gtc),
            client_order_id: Some("bob-1".into()),
            ..limit(Side::Buy, PRICE, "3000")
        })
        .await
        .expect("bob's bid accepted");
    assert_eq!(bid.status, "filled");
    assert_eq!(
        (bid.filled.as_str(), bid.filled_quote.as_str()),
        ("3000", "90000000")
    );
    assert_eq!(bid.client_order_id.as_deref(), Some("bob-1"));

    assert_eq!(
        rows(&alice.balances().await.expect("balances").balances),
        [
            ("BTC".into(), 8, "5000".into(), "2000".into()),
            ("USDT".into(), 6, "89910000".into(), "0".into()),
        ]
    );
    assert_eq!(
        rows(&bob.balances().await.expect("balances").balances),
        [
            ("BTC".into(), 8, "3000".into(), "0".into()),
            ("USDT".into(), 6, "9820000".into(), "0".into()),
        ]
    );
    assert_eq!(fee_revenue(&db, "USDT").await, "270000");

    let alice_trades = alice.trades(Some(MARKET), Some(10)).await.expect("trades");
    assert_eq!(alice_trades.len(), 1);
    let trade = &alice_trades[0];
    assert_eq!(
        (
            trade.price.as_str(),
            trade.quantity.as_str(),
            trade.quote_quantity.as_str()
        ),
        (PRICE, "3000", "90000000")
    );
    assert_eq!(
        (trade.maker_order_id, trade.taker_order_id),
        (ask.id, bid.id)
    );
    assert_eq!(
        (
            trade.liquidity.as_str(),
            trade.fee.as_str(),
            trade.fee_asset.as_str()
        ),
        ("maker", "90000", "USDT")
    );
    let bob_trades = bob.trades(None, None).await.expect("trades");
    assert_eq!(bob_trades.len(), 1);
    assert_eq!(
        (bob_trades[0].liquidity.as_str(), bob_trades[0].fee.as_str()),
        ("taker", "180000")
    );
    let depth = api.public().depth(MARKET, None).await.expect("depth");
    assert_eq!(depth.asks, [(PRICE.to_owned(), "2000".to_owned())]);

    let cancelled = alice.cancel_order(MARKET, ask.id).await.expect("cancelled");
    assert_eq!(cancelled.status, "cancelled");
    assert_eq!(cancelled.filled, "3000");
    assert_eq!(
        rows(&alice.balances().await.expect("balances").balances),
        [
            ("BTC".into(), 8, "7000".into(), "0".into()),
            ("USDT".into(), 6, "89910000".into(), "0".into()),
        ]
    );
    assert!(alice.open_orders(None).await.expect("open").is_empty());
    let history = alice
        .order_history(Some(MARKET), Some(10))
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, "cancelled");
    assert!(
        api.public()
            .depth(MARKET, None)
            .await
            .expect("depth")
            .asks
            .is_empty()
    );
    // Cancelling it again: it is no longer open.
    assert_refused(
        alice.cancel_order(MARKET, ask.id).await,
        404,
        "unknown_order",
    );
    db.assert_consistent().await;
}

/// Proves: each bad order or cancel is refused with its code, nothing is locked and nothing
/// changes (balances, orders, trades, transfers, outbox): unknown market, zero, negative and
/// off-lot quantity, off-tick price, insufficient funds, a body with an unknown field,
/// another member's order id, an unknown order id, and cancelling in an unknown market.
///
/// Steps: alice rests a sell of 2000 sat; take a snapshot; send each bad request and compare
/// the status, the code and the snapshot. Last, a post-only bid that would cross is
/// `422 rejected` and leaves bob's balances as they were.
#[tokio::test]
async fn bad_orders_are_refused_with_their_code_and_change_nothing() {
    let db = TestDb::new().await;
    let (api, alice, bob) = start(&db).await;
    let ask = alice
        .place_order(&limit(Side::Sell, PRICE, "2000"))
        .await
        .expect("resting ask");
    let before = snapshot(&db.pool).await;
    let bob_before = bob.balances().await.expect("balances");

    let cases: Vec<(NewOrder, u16, &str)> = vec![
        (
            NewOrder {
                market: "doge_usdt".into(),
                ..limit(Side::Buy, PRICE, "1000")
            },
            400,
            "unknown_market",
        ),
        (limit(Side::Buy, PRICE, "0"), 400, "invalid_quantity"),
        (limit(Side::Buy, PRICE, "-1000"), 400, "invalid_quantity"),
        (limit(Side::Buy, PRICE, "1500"), 400, "quantity_off_lot"),
        (limit(Side::Buy, "30000500", "1000"), 400, "price_off_tick"),
        (limit(Side::Buy, "0", "1000"), 400, "invalid_quantity"),
        // 1000 lots at 30 USDT need 30000 USDT plus fees; bob has 100.
        (
            limit(Side::Buy, PRICE, "1000000"),
            422,
            "insufficient_funds",
        ),
        // A sell of BTC bob does not have.
        (limit(Side::Sell, PRICE, "1000"), 422, "insufficient_funds"),
    ];
    for (order, status, code) in cases {
        let result = bob.place_order(&order).await;
        assert_refused(result, status, code);
        assert_eq!(snapshot(&db.pool).await, before, "{code} changed nothing");
    }

    let unknown_field = bob
        .prepare(
            Method::POST,
            "/v1/orders",
            br#"{"market":"btc_usdt","side":"buy","kind":"limit","price":"30000000","quantity":"1000","leverage":100}"#.to_vec(),
        )
        .expect("sign");
    let answer = bob.send(&unknown_field).await.expect("answer");
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(snapshot(&db.pool).await, before);

    assert_refused(bob.cancel_order(MARKET, ask.id).await, 403, "foreign_order");
    assert_refused(
        bob.cancel_order(MARKET, 999_999).await,
        404,
        "unknown_order",
    );
    assert_refused(
        bob.cancel_order("doge_usdt", ask.id).await,
        400,
        "unknown_market",
    );
    assert_refused(
        bob.open_orders(Some("doge_usdt")).await,
        400,
        "unknown_market",
    );
    assert_refused(
        api.public().depth("doge_usdt", None).await,
        400,
        "unknown_market",
    );
    assert_eq!(
        snapshot(&db.pool).await,
        before,
        "no refusal changed anything"
    );
    assert_eq!(bob.balances().await.expect("balances"), bob_before);
    // A post-only bid that would cross is rejected by the matcher: recorded as rejected,
    // nothing locked, no trade.
    let post_only = bob
        .place_order(&NewOrder {
            time_in_force: Some(TimeInForce::PostOnly),
            ..limit(Side::Buy, PRICE, "1000")
        })
        .await;
    assert_refused(post_only, 422, "rejected");
    assert_eq!(bob.balances().await.expect("balances"), bob_before);
    assert!(bob.trades(None, None).await.expect("trades").is_empty());
    assert!(bob.open_orders(None).await.expect("open").is_empty());
    // Alice's order is untouched by bob's attempts.
    let open = alice.open_orders(Some(MARKET)).await.expect("open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].hold, "2000");
    db.assert_consistent().await;
}
