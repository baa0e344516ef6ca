//! Property tests of trading's ledger rules against a real PostgreSQL: for random order and
//! cancel sequences, value is conserved per asset, no balance goes negative, locked equals
//! the holds of open orders, the journal audits clean, and a restart rebuilds the same book.

mod common;

use coinhub_exchange::journal;
use coinhub_exchange::trading::{
    EventsSink, MemberId, NewOrder, OrderKind, Side, TimeInForce, TradingEngine,
};
use common::trading::{assert_locked_equals_holds, markets};
use common::{TestDb, confirmed};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Limit {
        who: usize,
        buy: bool,
        price_ticks: u64,
        lots: u64,
        tif: u8,
    },
    Market {
        who: usize,
        buy: bool,
        lots: u64,
    },
    BuyByQuote {
        who: usize,
        quote_ticks: u64,
    },
    Cancel {
        who: usize,
        nth: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, any::<bool>(), 95..106u64, 1..6u64, 0..4u8).prop_map(
            |(who, buy, price_ticks, lots, tif)| Op::Limit { who, buy, price_ticks, lots, tif }),
        1 => (0..3usize, any::<bool>(), 1..6u64).prop_map(|(who, buy, lots)| Op::Market { who, buy, lots }),
        1 => (0..3usize, 50..800u64).prop_map(|(who, quote_ticks)| Op::BuyByQuote { who, quote_ticks }),
        2 => (0..3usize, 0..4usize).prop_map(|(who, nth)| Op::Cancel { who, nth }),
    ]
}

const NAMES: [&str; 3] = ["p0", "p1", "p2"];

async fn run_case(ops: Vec<Op>) {
    let db = TestDb::new().await;
    for who in NAMES {
        for (asset, amount, decimals) in [("BTC", "20000", 8), ("USDT", "5000000", 6)] {
            deposits(&db, who, asset, amount, decimals).await;
        }
    }
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine starts");
    let member = |who: usize| -> MemberId { NAMES[who].parse().expect("member") };
    for op in ops {
        let base = NewOrder {
            market: "btc_usdt".into(),
            side: Side::Buy,
            kind: OrderKind::Market,
            price: None,
            quantity: None,
            quote_amount: None,
            time_in_force: None,
            client_order_id: None,
        };
        // Errors (insufficient funds, rejections) are part of the game; invariants below.
        match op {
            Op::Limit {
                who,
                buy,
                price_ticks,
                lots,
                tif,
            } => {
                let order = NewOrder {
                    side: if buy { Side::Buy } else { Side::Sell },
                    kind: OrderKind::Limit,
                    price: Some((price_ticks * 100).to_string()),
                    quantity: Some((lots * 1000).to_string()),
                    time_in_force: Some(
                        [
                            TimeInForce::Gtc,
                            TimeInForce::Ioc,
                            TimeInForce::Fok,
                            TimeInForce::PostOnly,
                        ][usize::from(tif)],
                    ),
                    ..base
                };
                let _ = engine.place(&member(who), order).await;
            }
            Op::Market { who, buy, lots } => {
                let order = NewOrder {
                    side: if buy { Side::Buy } else { Side::Sell },
                    quantity: Some((lots * 1000).to_string()),
                    ..base
                };
                let _ = engine.place(&member(who), order).await;
            }
            Op::BuyByQuote { who, quote_ticks } => {
                let order = NewOrder {
                    quote_amount: Some((quote_ticks * 100).to_string()),
                    ..base
                };
                let _ = engine.place(&member(who), order).await;
            }
            Op::Cancel { who, nth } => {
                let open = engine
                    .open_orders(&member(who), None)
                    .await
                    .expect("open orders");
                if let Some(order) = open.get(nth) {
                    engine
                        .cancel(&member(who), "btc_usdt", order.id)
                        .await
                        .expect("cancel of an own open order");
                }
            }
        }
    }

    // Conservation: per asset, member and fee accounts together hold exactly the deposits.
    let sums: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT asset,
                sum(balance) FILTER (WHERE kind <> 'hot_wallet')::text,
                sum(balance) FILTER (WHERE kind = 'hot_wallet')::text
           FROM accounts GROUP BY asset ORDER BY asset",
    )
    .fetch_all(&db.pool)
    .await
    .expect("sums");
    for (asset, held, deposited) in sums {
        assert_eq!(held, deposited, "{asset} is conserved");
    }
    let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE balance < 0")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(negative, 0);
    assert_locked_equals_holds(&db).await;
    db.assert_consistent().await;

    // Replay: a new engine rebuilds the same book.
    let depth = engine.depth("btc_usdt", 1000).expect("depth");
    drop(engine);
    let engine = TradingEngine::start(db.pool.clone(), markets(), EventsSink::Outbox)
        .await
        .expect("engine restarts");
    assert_eq!(engine.depth("btc_usdt", 1000).expect("depth"), depth);
    let _ = journal::platform_balances(&db.pool)
        .await
        .expect("readable");
}

async fn deposits(db: &TestDb, who: &str, asset: &str, amount: &str, decimals: u8) {
    coinhub_exchange::deposits::apply(&db.pool, &confirmed(who, asset, amount, decimals))
        .await
        .expect("deposit");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Proves: for any sequence of limit (all time-in-force), market, buy-by-quote and
    /// cancel commands from three members, every asset is conserved across member and fee
    /// accounts, no balance is negative, locked equals open holds, the journal audits clean
    /// and replay rebuilds the same book.
    #[test]
    fn ledger_invariants_hold_for_random_sequences(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run_case(ops));
    }
}
