//! Book snapshots: a market's resting orders in priority order after command `seq`
//! ([`coinhub_matcher::BookSnapshot`], JSON in `trading_book_snapshots`), so a restart replays
//! only the commands after the newest snapshot instead of the whole log.
//!
//! A snapshot is an optimisation, never the record: the command log stays complete, and a
//! book restored from a snapshot is checked against the open orders like a replayed one.
//! Snapshots are taken after a batch commits, outside its transaction; one that fails to save
//! is logged and the next one is tried [`EngineOptions::snapshot_every`] commands later.
//!
//! [`EngineOptions::snapshot_every`]: super::EngineOptions::snapshot_every

use coinhub_matcher::{
    BookSnapshot, Command, Event, Market as MatcherMarket, OrderBook, OrderKind, Side, TimeInForce,
};
use sqlx::PgPool;

use super::TradingError;

/// Commands between two snapshots of a market when not configured.
pub const SNAPSHOT_EVERY_DEFAULT: u64 = 100_000;

/// Rebuilds the book `snapshot` shows: each resting order is placed again, best level first
/// and in queue order within a level, as a GTC limit order for its remaining lots. The two
/// sides of a snapshot never cross, so nothing trades, every queue keeps its time priority,
/// and the book then answers every command exactly as the one the snapshot was taken of.
///
/// Errors: [`TradingError::Database`] if the snapshot is not a valid book (crossed, a
/// duplicate id, an empty order): the matcher refused or traded one of its orders.
pub(crate) fn restore(
    market: MatcherMarket,
    snapshot: &BookSnapshot,
) -> Result<OrderBook, TradingError> {
    let mut book = OrderBook::new(market);
    let mut events = Vec::new();
    let sides = [(Side::Buy, &snapshot.bids), (Side::Sell, &snapshot.asks)];
    for (side, levels) in sides {
        for level in levels {
            for order in &level.orders {
                events.clear();
                book.execute(
                    &Command::Place {
                        id: order.id,
                        member: order.member,
                        side,
                        kind: OrderKind::Limit {
                            price_ticks: level.price_ticks,
                            quantity_lots: order.remaining_lots,
                            tif: TimeInForce::Gtc,
                        },
                    },
                    &mut events,
                );
                if !matches!(events.as_slice(), [Event::Accepted { .. }]) {
                    return Err(TradingError::Database(format!(
                        "book snapshot: order {} did not rest as it was: {events:?}",
                        order.id.0
                    )));
                }
            }
        }
    }
    Ok(book)
}

/// The book of `market` restored from its newest snapshot, and the seq of the last command
/// that snapshot includes; an empty book (`new_market()`) and 0 when there is none. A snapshot
/// that does not parse or restore is logged and ignored: the caller then replays the whole
/// command log, which is the record.
///
/// Errors: [`TradingError::Database`] when the database cannot be read.
pub(crate) async fn newest_book(
    pool: &PgPool,
    market: &str,
    new_market: impl Fn() -> MatcherMarket,
) -> Result<(OrderBook, u64), TradingError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, book FROM trading_book_snapshots
          WHERE market = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(market)
    .fetch_optional(pool)
    .await?;
    let Some((seq, text)) = row else {
        return Ok((OrderBook::new(new_market()), 0));
    };
    let restored = serde_json::from_str::<BookSnapshot>(&text)
        .map_err(|e| TradingError::Database(e.to_string()))
        .and_then(|book| restore(new_market(), &book));
    match restored {
        Ok(book) => Ok((book, u64::try_from(seq).expect("the table checks seq > 0"))),
        Err(error) => {
            tracing::warn!(%market, seq, %error,
                "book snapshot unusable; replaying the whole command log");
            Ok((OrderBook::new(new_market()), 0))
        }
    }
}

/// The ids of the resting orders in `snapshot`, bids then asks, in priority order.
pub(crate) fn resting_ids(snapshot: &BookSnapshot) -> impl Iterator<Item = u64> + '_ {
    snapshot
        .bids
        .iter()
        .chain(&snapshot.asks)
        .flat_map(|level| level.orders.iter().map(|order| order.id.0))
}

/// Stores `book`, the state of `market` after command `seq`. Saving the same snapshot twice
/// is a no-op.
///
/// Errors: the database's.
pub(crate) async fn save(
    pool: &PgPool,
    market: &str,
    seq: u64,
    book: &BookSnapshot,
) -> Result<(), TradingError> {
    let text = serde_json::to_string(book).expect("a book snapshot serializes");
    let orders = resting_ids(book).count();
    sqlx::query(
        "INSERT INTO trading_book_snapshots (market, seq, orders, book) VALUES ($1, $2, $3, $4)
         ON CONFLICT (market, seq) DO NOTHING",
    )
    .bind(market)
    .bind(i64::try_from(seq).expect("sequence numbers stay below 2^63"))
    .bind(i64::try_from(orders).expect("order count fits i64"))
    .bind(text)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use coinhub_matcher::{
        Command, Market, MemberId, OrderBook, OrderId, OrderKind, Side, TimeInForce,
    };
    use proptest::prelude::*;

    use super::{resting_ids, restore};

    fn market() -> Market {
        Market {
            base: "btc".into(),
            quote: "usdt".into(),
            min_order_lots: 1,
        }
    }

    /// (place?, member, buy?, price, lots, tif, which order to cancel)
    type Step = (bool, u64, bool, u64, u64, u8, usize);

    fn command(step: Step, next_id: &mut u64, live: &[u64]) -> Command {
        let (place, member, buy, price, lots, tif, pick) = step;
        if !place && !live.is_empty() {
            return Command::Cancel {
                id: OrderId(live[pick % live.len()]),
                member: MemberId(member),
            };
        }
        *next_id += 1;
        let kind = match tif {
            0 => OrderKind::Market {
                quantity_lots: lots,
            },
            1 => OrderKind::Limit {
                price_ticks: price,
                quantity_lots: lots,
                tif: TimeInForce::Ioc,
            },
            2 => OrderKind::Limit {
                price_ticks: price,
                quantity_lots: lots,
                tif: TimeInForce::PostOnly,
            },
            _ => OrderKind::Limit {
                price_ticks: price,
                quantity_lots: lots,
                tif: TimeInForce::Gtc,
            },
        };
        Command::Place {
            id: OrderId(*next_id),
            member: MemberId(member),
            side: if buy { Side::Buy } else { Side::Sell },
            kind,
        }
    }

    fn live_ids(book: &OrderBook) -> Vec<u64> {
        resting_ids(&book.snapshot()).collect()
    }

    proptest! {
        /// A book restored from a snapshot taken after any prefix of a random command
        /// sequence emits exactly the events of the original for the rest of the sequence,
        /// and ends with the same snapshot.
        #[test]
        fn a_restored_book_answers_like_the_original(
            steps in prop::collection::vec(
                (any::<bool>(), 1..4u64, any::<bool>(), 95..106u64, 1..6u64, 0..6u8, any::<usize>()),
                1..120,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(steps.len());
            let mut original = OrderBook::new(market());
            let mut next_id = 0;
            for step in &steps[..cut] {
                let live = live_ids(&original);
                original.apply(&command(*step, &mut next_id, &live));
            }
            let mut restored = restore(market(), &original.snapshot()).expect("restores");
            prop_assert_eq!(restored.snapshot(), original.snapshot());
            for step in &steps[cut..] {
                let live = live_ids(&original);
                let command = command(*step, &mut next_id, &live);
                prop_assert_eq!(restored.apply(&command), original.apply(&command));
            }
            prop_assert_eq!(restored.snapshot(), original.snapshot());
        }
    }
}
