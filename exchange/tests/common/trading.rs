//! Trading fixtures shared by `trading.rs` and `trading_props.rs`.

use std::collections::BTreeMap;

use coinhub_exchange::markets::{MarketConfig, MarketsConfig, UnitsValue};
use coinhub_exchange::trading::{self, NewOrder, OrderKind, Side};

use super::TestDb;

/// btc_usdt: tick 100 quote units per lot, lot 1000 satoshi, min 1 lot, maker 10 bps,
/// taker 20 bps.
pub fn markets() -> MarketsConfig {
    let mut map = BTreeMap::new();
    map.insert("btc_usdt".to_owned(), market("BTC", "USDT"));
    MarketsConfig(map)
}

/// A market of `base` against `quote` with btc_usdt's steps and fees (see [`markets`]).
pub fn market(base: &str, quote: &str) -> MarketConfig {
    MarketConfig {
        base: base.into(),
        quote: quote.into(),
        tick_size: UnitsValue::Text("100".into()),
        lot_size: UnitsValue::Text("1000".into()),
        min_quantity: None,
        maker_fee_bps: 10,
        taker_fee_bps: 20,
    }
}

/// A GTC limit order on btc_usdt: `price` in quote base units per lot, `quantity` in base
/// units.
pub fn limit(side: Side, price: &str, quantity: &str) -> NewOrder {
    NewOrder {
        market: "btc_usdt".into(),
        side,
        kind: OrderKind::Limit,
        price: Some(price.into()),
        quantity: Some(quantity.into()),
        quote_amount: None,
        time_in_force: None,
        client_order_id: None,
    }
}

/// Projects every committed batch into the read models `orders` and `trades` (the engine
/// does so in the background, after its commits).
pub async fn project(db: &TestDb) {
    trading::projection::catch_up_all(&db.pool)
        .await
        .expect("orders and trades projected");
}

/// The rows of `table` (`orders` or `trades`) once every committed batch is projected.
pub async fn count_projected(db: &TestDb, table: &str) -> i64 {
    project(db).await;
    db.count(table).await
}

/// Asserts every member's locked balance equals the holds of their open orders (once the
/// open orders are projected).
pub async fn assert_locked_equals_holds(db: &TestDb) {
    project(db).await;
    let mismatches: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT a.member_id, a.asset, a.balance::text, coalesce(h.hold, 0)::text
           FROM accounts a
           LEFT JOIN (SELECT member_id, hold_asset, sum(hold) AS hold FROM orders
                       WHERE status = 'open' GROUP BY member_id, hold_asset) h
             ON h.member_id = a.member_id AND h.hold_asset = a.asset
          WHERE a.kind = 'locked' AND a.balance <> coalesce(h.hold, 0)",
    )
    .fetch_all(&db.pool)
    .await
    .expect("compare");
    assert!(
        mismatches.is_empty(),
        "locked differs from open holds: {mismatches:?}"
    );
}
