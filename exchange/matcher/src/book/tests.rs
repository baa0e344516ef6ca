//! Unit tests: one behaviour each, driven through `OrderBook::apply`.

use super::*;

const ALICE: MemberId = MemberId(1);
const BOB: MemberId = MemberId(2);
const CAROL: MemberId = MemberId(3);

fn book() -> OrderBook {
    OrderBook::new(Market {
        base: "btc".into(),
        quote: "usdt".into(),
        min_order_lots: 2,
    })
}

fn limit(
    id: u64,
    member: MemberId,
    side: Side,
    price_ticks: u64,
    quantity_lots: u64,
    tif: TimeInForce,
) -> Command {
    Command::Place {
        id: OrderId(id),
        member,
        side,
        kind: OrderKind::Limit {
            price_ticks,
            quantity_lots,
            tif,
        },
    }
}

fn gtc(id: u64, member: MemberId, side: Side, price_ticks: u64, quantity_lots: u64) -> Command {
    limit(
        id,
        member,
        side,
        price_ticks,
        quantity_lots,
        TimeInForce::Gtc,
    )
}

fn trade(
    maker: u64,
    maker_member: MemberId,
    taker: u64,
    taker_member: MemberId,
    taker_side: Side,
    price_ticks: u64,
    quantity_lots: u64,
) -> Event {
    Event::Trade {
        maker_id: OrderId(maker),
        taker_id: OrderId(taker),
        maker_member,
        taker_member,
        taker_side,
        price_ticks,
        quantity_lots,
    }
}

fn market(id: u64, member: MemberId, side: Side, quantity_lots: u64) -> Command {
    Command::Place {
        id: OrderId(id),
        member,
        side,
        kind: OrderKind::Market { quantity_lots },
    }
}

fn accepted(id: u64) -> Event {
    Event::Accepted { id: OrderId(id) }
}

fn done(id: u64) -> Event {
    Event::Done { id: OrderId(id) }
}

fn rejected(id: u64, reason: RejectReason) -> Event {
    Event::Rejected {
        id: OrderId(id),
        reason,
    }
}

/// A GTC order that meets nothing rests: only `Accepted`, and the book shows it.
#[test]
fn gtc_without_match_rests() {
    let mut book = book();
    assert_eq!(
        book.apply(&gtc(1, ALICE, Side::Buy, 100, 5)),
        vec![accepted(1)]
    );
    assert_eq!(book.best_bid_ticks(), Some(100));
    assert_eq!(book.remaining_lots(OrderId(1)), Some(5));
    assert_eq!(
        book.depth(10),
        Depth {
            bids: vec![DepthLevel {
                price_ticks: 100,
                total_lots: 5
            }],
            asks: vec![],
        }
    );
}

/// Price then time: with asks at 101 (id 1, then id 2) and 100 (id 3), a buy for 10 at 101
/// takes id 3 first (better price), then id 1 (earlier at 101), then part of id 2; every trade is
/// at the maker's price, and the taker is done.
#[test]
fn price_then_time_priority_at_maker_price() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, 101, 3));
    book.apply(&gtc(2, BOB, Side::Sell, 101, 4));
    book.apply(&gtc(3, BOB, Side::Sell, 100, 2));
    let events = book.apply(&gtc(4, CAROL, Side::Buy, 105, 7));
    assert_eq!(
        events,
        vec![
            accepted(4),
            trade(3, BOB, 4, CAROL, Side::Buy, 100, 2),
            done(3),
            trade(1, ALICE, 4, CAROL, Side::Buy, 101, 3),
            done(1),
            trade(2, BOB, 4, CAROL, Side::Buy, 101, 2),
            done(4),
        ]
    );
    assert_eq!(book.remaining_lots(OrderId(2)), Some(2));
    assert_eq!(book.best_bid_ticks(), None);
}

/// A limit order never trades beyond its price: the part that cannot match rests at the limit.
#[test]
fn limit_stops_at_its_price_and_rests_the_rest() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Buy, 99, 5));
    book.apply(&gtc(2, ALICE, Side::Buy, 97, 5));
    let events = book.apply(&gtc(3, BOB, Side::Sell, 98, 8));
    assert_eq!(
        events,
        vec![
            accepted(3),
            trade(1, ALICE, 3, BOB, Side::Sell, 99, 5),
            done(1)
        ]
    );
    assert_eq!(book.best_ask_ticks(), Some(98));
    assert_eq!(book.remaining_lots(OrderId(3)), Some(3));
    assert_eq!(book.best_bid_ticks(), Some(97));
}

/// IOC: fills what it can and cancels the rest as `Unfilled`; nothing rests.
#[test]
fn ioc_cancels_the_rest() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, 100, 3));
    let events = book.apply(&limit(2, BOB, Side::Buy, 100, 5, TimeInForce::Ioc));
    assert_eq!(
        events,
        vec![
            accepted(2),
            trade(1, ALICE, 2, BOB, Side::Buy, 100, 3),
            done(1),
            Event::Cancelled {
                id: OrderId(2),
                remaining: Remaining::Lots(2),
                reason: CancelReason::Unfilled
            },
        ]
    );
    assert_eq!(book.order_count(), 0);
}

/// FOK: rejected untouched when the book (other members' orders within the limit) cannot fill it
/// all; filled completely when it can.
#[test]
fn fok_fills_all_or_nothing() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, 100, 3));
    book.apply(&gtc(2, BOB, Side::Sell, 100, 3)); // the taker's own: does not count
    book.apply(&gtc(3, ALICE, Side::Sell, 102, 3)); // beyond the limit
    let before = book.snapshot();
    let events = book.apply(&limit(4, BOB, Side::Buy, 101, 4, TimeInForce::Fok));
    assert_eq!(
        events,
        vec![rejected(
            4,
            RejectReason::FokNotFillable { fillable_lots: 3 }
        )]
    );
    assert_eq!(book.snapshot(), before);

    let events = book.apply(&limit(5, CAROL, Side::Buy, 101, 4, TimeInForce::Fok));
    assert_eq!(
        events,
        vec![
            accepted(5),
            trade(1, ALICE, 5, CAROL, Side::Buy, 100, 3),
            done(1),
            trade(2, BOB, 5, CAROL, Side::Buy, 100, 1),
            done(5),
        ]
    );
}

/// Post-only: rejected if it would match on arrival, rests otherwise.
#[test]
fn post_only_never_takes() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, 100, 3));
    let events = book.apply(&limit(2, BOB, Side::Buy, 100, 3, TimeInForce::PostOnly));
    assert_eq!(
        events,
        vec![rejected(
            2,
            RejectReason::PostOnlyWouldCross {
                best_opposite_price_ticks: 100
            }
        )]
    );
    let events = book.apply(&limit(3, BOB, Side::Buy, 99, 3, TimeInForce::PostOnly));
    assert_eq!(events, vec![accepted(3)]);
    assert_eq!(book.best_bid_ticks(), Some(99));
}

/// Market by quantity sweeps levels at each maker's price and cancels what the book cannot fill.
#[test]
fn market_order_sweeps_and_cancels_the_rest() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Buy, 100, 2));
    book.apply(&gtc(2, ALICE, Side::Buy, 90, 2));
    assert_eq!(
        book.apply(&market(3, BOB, Side::Sell, 5)),
        vec![
            accepted(3),
            trade(1, ALICE, 3, BOB, Side::Sell, 100, 2),
            done(1),
            trade(2, ALICE, 3, BOB, Side::Sell, 90, 2),
            done(2),
            Event::Cancelled {
                id: OrderId(3),
                remaining: Remaining::Lots(1),
                reason: CancelReason::Unfilled
            },
        ]
    );
}

/// Market buy by quote: buys whole lots while the budget covers a lot at the best price, then
/// reports the unspent budget; a budget spent exactly ends with `Done`.
#[test]
fn market_buy_by_quote_spends_budget() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, 10, 2));
    book.apply(&gtc(2, ALICE, Side::Sell, 12, 5));
    let by_quote = |id, quote_amount| Command::Place {
        id: OrderId(id),
        member: BOB,
        side: Side::Buy,
        kind: OrderKind::MarketBuyByQuote { quote_amount },
    };
    // 2 lots × 10 = 20, then 3 lots × 12 = 36, 1 left (less than one lot at 12).
    assert_eq!(
        book.apply(&by_quote(3, 57)),
        vec![
            accepted(3),
            trade(1, ALICE, 3, BOB, Side::Buy, 10, 2),
            done(1),
            trade(2, ALICE, 3, BOB, Side::Buy, 12, 3),
            Event::Cancelled {
                id: OrderId(3),
                remaining: Remaining::QuoteAmount(1),
                reason: CancelReason::Unfilled
            },
        ]
    );
    assert_eq!(
        book.apply(&by_quote(4, 24)),
        vec![
            accepted(4),
            trade(2, ALICE, 4, BOB, Side::Buy, 12, 2),
            done(2),
            done(4)
        ]
    );
    let sell = Command::Place {
        id: OrderId(5),
        member: BOB,
        side: Side::Sell,
        kind: OrderKind::MarketBuyByQuote { quote_amount: 5 },
    };
    assert_eq!(
        book.apply(&sell),
        vec![rejected(5, RejectReason::SellByQuote)]
    );
}

/// Self-trade prevention: a taker meeting its own member's resting order cancels that resting
/// order (reason `SelfTrade`) and goes on matching others behind it.
#[test]
fn self_trade_cancels_the_resting_order() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, 100, 3));
    book.apply(&gtc(2, BOB, Side::Sell, 100, 3));
    let events = book.apply(&gtc(3, ALICE, Side::Buy, 100, 2));
    assert_eq!(
        events,
        vec![
            accepted(3),
            Event::Cancelled {
                id: OrderId(1),
                remaining: Remaining::Lots(3),
                reason: CancelReason::SelfTrade
            },
            trade(2, BOB, 3, ALICE, Side::Buy, 100, 2),
            done(3),
        ]
    );
    assert_eq!(book.remaining_lots(OrderId(1)), None);
}

/// Cancel: the owner's cancel reports the remaining lots; unknown and foreign ids are rejected
/// and change nothing.
#[test]
fn cancel_checks_owner() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Buy, 100, 5));
    assert_eq!(
        book.apply(&Command::Cancel {
            id: OrderId(1),
            member: BOB
        }),
        vec![rejected(1, RejectReason::ForeignOrder)]
    );
    assert_eq!(
        book.apply(&Command::Cancel {
            id: OrderId(9),
            member: ALICE
        }),
        vec![rejected(9, RejectReason::UnknownOrder)]
    );
    assert_eq!(
        book.apply(&Command::Cancel {
            id: OrderId(1),
            member: ALICE
        }),
        vec![Event::Cancelled {
            id: OrderId(1),
            remaining: Remaining::Lots(5),
            reason: CancelReason::Requested
        }]
    );
    assert_eq!(book.order_count(), 0);
    assert_eq!(book.best_bid_ticks(), None);
}

/// Validation: zero quantity, zero price, below minimum and a live duplicate id are rejected
/// with their reasons and leave the book unchanged.
#[test]
fn bad_orders_are_rejected() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Buy, 100, 5));
    let before = book.snapshot();
    assert_eq!(
        book.apply(&gtc(2, ALICE, Side::Buy, 100, 0)),
        vec![rejected(2, RejectReason::ZeroQuantity)]
    );
    assert_eq!(
        book.apply(&gtc(2, ALICE, Side::Buy, 0, 5)),
        vec![rejected(2, RejectReason::ZeroPrice)]
    );
    assert_eq!(
        book.apply(&gtc(2, ALICE, Side::Buy, 100, 1)),
        vec![rejected(
            2,
            RejectReason::BelowMinimum {
                quantity_lots: 1,
                min_order_lots: 2
            }
        )]
    );
    assert_eq!(
        book.apply(&gtc(1, BOB, Side::Sell, 200, 5)),
        vec![rejected(1, RejectReason::DuplicateId)]
    );
    let zero_budget = Command::Place {
        id: OrderId(3),
        member: BOB,
        side: Side::Buy,
        kind: OrderKind::MarketBuyByQuote { quote_amount: 0 },
    };
    assert_eq!(
        book.apply(&zero_budget),
        vec![rejected(3, RejectReason::ZeroQuantity)]
    );
    assert_eq!(book.snapshot(), before);
}

/// Extreme values: prices and quantities near `u64::MAX` do not overflow (price × lots is
/// computed in u128).
#[test]
fn extreme_values_do_not_overflow() {
    let mut book = book();
    book.apply(&gtc(1, ALICE, Side::Sell, u64::MAX, u64::MAX));
    let by_quote = Command::Place {
        id: OrderId(2),
        member: BOB,
        side: Side::Buy,
        kind: OrderKind::MarketBuyByQuote {
            quote_amount: u64::MAX,
        },
    };
    assert_eq!(
        book.apply(&by_quote),
        vec![
            accepted(2),
            trade(1, ALICE, 2, BOB, Side::Buy, u64::MAX, 1),
            done(2)
        ]
    );
    assert_eq!(book.remaining_lots(OrderId(1)), Some(u64::MAX - 1));
}

/// Cancels at both ends and inside a long level (unlinking its first, last and middle orders)
/// keep the level's totals and time priority. Steps: 60 asks at one price; cancel the first, the
/// last and 40 in the middle, then re-place a cancelled id (reusing a freed node); the snapshot lists the survivors in arrival order with the re-placed
/// order last, depth sums them, and a sweeping buy fills them in that order.
#[test]
fn cancels_inside_a_level_keep_priority() {
    let mut book = book();
    for id in 1..=60 {
        book.apply(&gtc(id, ALICE, Side::Sell, 100, 2 + id));
    }
    let cancelled: Vec<u64> = [1, 60].into_iter().chain(10..50).collect();
    for &id in &cancelled {
        let events = book.apply(&Command::Cancel {
            id: OrderId(id),
            member: ALICE,
        });
        assert_eq!(
            events,
            vec![Event::Cancelled {
                id: OrderId(id),
                remaining: Remaining::Lots(2 + id),
                reason: CancelReason::Requested
            }]
        );
        assert_eq!(book.remaining_lots(OrderId(id)), None);
    }
    book.apply(&gtc(30, ALICE, Side::Sell, 100, 7));

    let mut survivors: Vec<u64> = (2..10).chain(50..60).collect();
    survivors.push(30);
    let expected: Vec<OrderView> = survivors
        .iter()
        .map(|&id| OrderView {
            id: OrderId(id),
            member: ALICE,
            remaining_lots: if id == 30 { 7 } else { 2 + id },
        })
        .collect();
    let snapshot = book.snapshot();
    assert_eq!(snapshot.asks.len(), 1);
    assert_eq!(snapshot.asks[0].orders, expected);
    let total_lots: u64 = expected.iter().map(|o| o.remaining_lots).sum();
    assert_eq!(book.depth(1).asks[0].total_lots, total_lots);
    assert_eq!(book.order_count(), survivors.len());

    let events = book.apply(&gtc(100, BOB, Side::Buy, 100, total_lots));
    let makers: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::Trade { maker_id, .. } => Some(maker_id.0),
            _ => None,
        })
        .collect();
    assert_eq!(makers, survivors);
    assert_eq!(events.last(), Some(&done(100)));
    assert_eq!(book.best_ask_ticks(), None);
    assert_eq!(book.order_count(), 0);
}

/// Prices far apart (most of them outside the price ladder's window of 2¹⁸ ticks, and one that
/// moves the window once it is empty) keep price priority: depth lists them best first, and a
/// market sell takes the bids highest first, each at its own price.
#[test]
fn far_apart_prices_keep_price_priority() {
    let far = 1u64 << 40;
    let mut book = book();
    for (id, price_ticks) in [(1, 100), (2, far), (3, u64::MAX / 4), (4, far + 7)] {
        book.apply(&gtc(id, ALICE, Side::Buy, price_ticks, 2));
    }
    book.apply(&gtc(5, ALICE, Side::Sell, u64::MAX - 1, 2));
    book.apply(&gtc(6, ALICE, Side::Sell, u64::MAX, 2));
    let bid_prices: Vec<u64> = book.depth(10).bids.iter().map(|l| l.price_ticks).collect();
    assert_eq!(bid_prices, [u64::MAX / 4, far + 7, far, 100]);
    let ask_prices: Vec<u64> = book.depth(10).asks.iter().map(|l| l.price_ticks).collect();
    assert_eq!(ask_prices, [u64::MAX - 1, u64::MAX]);

    assert_eq!(
        book.apply(&market(7, BOB, Side::Sell, 6)),
        vec![
            accepted(7),
            trade(3, ALICE, 7, BOB, Side::Sell, u64::MAX / 4, 2),
            done(3),
            trade(4, ALICE, 7, BOB, Side::Sell, far + 7, 2),
            done(4),
            trade(2, ALICE, 7, BOB, Side::Sell, far, 2),
            done(2),
            done(7),
        ]
    );
    // The bid side now holds only 100; emptied of it, its window moves to the next far price.
    book.apply(&market(8, BOB, Side::Sell, 2));
    assert_eq!(book.best_bid_ticks(), None);
    book.apply(&gtc(9, ALICE, Side::Buy, far + 1, 2));
    book.apply(&gtc(10, ALICE, Side::Buy, 99, 2));
    assert_eq!(book.best_bid_ticks(), Some(far + 1));
    let bid_prices: Vec<u64> = book.depth(10).bids.iter().map(|l| l.price_ticks).collect();
    assert_eq!(bid_prices, [far + 1, 99]);
}
