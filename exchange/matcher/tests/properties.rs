//! Property tests: random command sequences against one book, checking the matcher's invariants
//! after every command.

use std::collections::BTreeMap;

use coinhub_matcher::{
    BookSnapshot, CancelReason, Command, Event, Market, MemberId, OrderBook, OrderId, OrderKind,
    Remaining, Side, TimeInForce,
};
use proptest::prelude::*;

fn market() -> Market {
    Market {
        base: "btc".into(),
        quote: "usdt".into(),
        min_order_lots: 2,
    }
}

/// Raw generated command: (operation, member, is_buy, price, quantity, id pick).
type Raw = (u8, u64, bool, u64, u64, u64);

/// Turns raw tuples into commands. Ids are fresh (`index + 1`) except for occasional reuse of an
/// earlier id (live → duplicate rejection; finished → allowed reuse) and cancels of any id.
fn commands(raws: &[Raw]) -> Vec<Command> {
    raws.iter()
        .enumerate()
        .map(
            |(index, &(op, member, is_buy, price_ticks, quantity_lots, pick))| {
                let fresh = index as u64 + 1;
                let member = MemberId(member);
                let side = if is_buy { Side::Buy } else { Side::Sell };
                let id = if op % 17 == 0 {
                    OrderId(pick % fresh + 1)
                } else {
                    OrderId(fresh)
                };
                let kind = |tif| OrderKind::Limit {
                    price_ticks,
                    quantity_lots,
                    tif,
                };
                match op % 16 {
                    0..=5 => Command::Place {
                        id,
                        member,
                        side,
                        kind: kind(TimeInForce::Gtc),
                    },
                    6 => Command::Place {
                        id,
                        member,
                        side,
                        kind: kind(TimeInForce::Ioc),
                    },
                    7 => Command::Place {
                        id,
                        member,
                        side,
                        kind: kind(TimeInForce::Fok),
                    },
                    8 => Command::Place {
                        id,
                        member,
                        side,
                        kind: kind(TimeInForce::PostOnly),
                    },
                    9 => Command::Place {
                        id,
                        member,
                        side,
                        kind: OrderKind::Market { quantity_lots },
                    },
                    10 => Command::Place {
                        id,
                        member,
                        side: Side::Buy,
                        kind: OrderKind::MarketBuyByQuote {
                            quote_amount: price_ticks * quantity_lots * 2,
                        },
                    },
                    _ => Command::Cancel {
                        id: OrderId(pick % fresh + 1),
                        member,
                    },
                }
            },
        )
        .collect()
}

fn raw() -> impl Strategy<Value = Raw> {
    (
        any::<u8>(),
        1..=3u64,
        any::<bool>(),
        95..=105u64,
        0..=12u64,
        any::<u64>(),
    )
}

/// Orders of one side in priority order, with their level price.
fn queue(levels: &[coinhub_matcher::LevelView]) -> Vec<(u64, OrderId, u64)> {
    levels
        .iter()
        .flat_map(|l| {
            l.orders
                .iter()
                .map(move |o| (l.price_ticks, o.id, o.remaining_lots))
        })
        .collect()
}

fn resting_lots(snapshot: &BookSnapshot) -> u128 {
    snapshot
        .bids
        .iter()
        .chain(&snapshot.asks)
        .flat_map(|l| &l.orders)
        .map(|o| u128::from(o.remaining_lots))
        .sum()
}

/// Runs `commands`, checking per-command invariants; returns all events and the final book.
fn run_checked(commands: &[Command]) -> (Vec<Vec<Event>>, BookSnapshot) {
    let mut book = OrderBook::new(market());
    let mut all = Vec::new();
    let mut arrival: BTreeMap<OrderId, u64> = BTreeMap::new();
    let mut arrivals: u64 = 0;
    // Lots accounting: placed = 2 × (trades whose taker counts lots) + (trades whose taker
    // spends quote) + cancelled lots + resting lots.
    let (mut placed, mut traded_both, mut traded_maker_only, mut cancelled) =
        (0u128, 0u128, 0u128, 0u128);

    for command in commands {
        let before = book.snapshot();
        let events = book.apply(command);
        let after = book.snapshot();

        // 1. Never crossed.
        if let (Some(bid), Some(ask)) = (book.best_bid_ticks(), book.best_ask_ticks()) {
            assert!(bid < ask, "crossed book: bid {bid} >= ask {ask}");
        }

        // 2. Price-time priority and maker price: makers are consumed from the head of the
        // opposite side's queue as it stood before the command.
        if let Command::Place {
            id: taker_id,
            member,
            side,
            kind,
        } = *command
        {
            let mut opposite = match side {
                Side::Buy => queue(&before.asks),
                Side::Sell => queue(&before.bids),
            };
            opposite.reverse(); // pop() takes the head
            let by_quote = matches!(kind, OrderKind::MarketBuyByQuote { .. });
            let mut spent: u128 = 0;
            let mut taker_lots: u128 = 0;
            for event in &events {
                match *event {
                    Event::Trade {
                        maker_id,
                        taker_id: t,
                        maker_member,
                        taker_member,
                        taker_side,
                        price_ticks,
                        quantity_lots,
                    } => {
                        assert_eq!(t, taker_id);
                        assert_eq!((taker_member, taker_side), (member, side));
                        assert_ne!(maker_member, taker_member, "self trade");
                        assert!(quantity_lots > 0);
                        let head = opposite.last_mut().expect("a trade needs a resting order");
                        assert_eq!(
                            (head.1, head.0),
                            (maker_id, price_ticks),
                            "not the head of the queue, or not its price"
                        );
                        head.2 -= quantity_lots;
                        if head.2 == 0 {
                            opposite.pop();
                        }
                        if let OrderKind::Limit {
                            price_ticks: limit, ..
                        } = kind
                        {
                            match side {
                                Side::Buy => assert!(price_ticks <= limit),
                                Side::Sell => assert!(price_ticks >= limit),
                            }
                        }
                        spent += u128::from(price_ticks) * u128::from(quantity_lots);
                        taker_lots += u128::from(quantity_lots);
                        if by_quote {
                            traded_maker_only += u128::from(quantity_lots);
                        } else {
                            traded_both += u128::from(quantity_lots);
                        }
                    }
                    Event::Cancelled {
                        id,
                        remaining,
                        reason: CancelReason::SelfTrade,
                    } => {
                        let head = opposite
                            .pop()
                            .expect("self-trade cancel needs a resting order");
                        assert_eq!((head.1, Remaining::Lots(head.2)), (id, remaining));
                        cancelled += u128::from(head.2);
                    }
                    _ => {}
                }
            }
            let was_accepted = events.first() == Some(&Event::Accepted { id: taker_id });
            match kind {
                _ if !was_accepted => assert_eq!(before, after, "a rejection changed the book"),
                OrderKind::Limit {
                    quantity_lots, tif, ..
                } => {
                    placed += u128::from(quantity_lots);
                    if tif == TimeInForce::Fok {
                        assert_eq!(
                            taker_lots,
                            u128::from(quantity_lots),
                            "fill-or-kill partly filled"
                        );
                    }
                    if tif == TimeInForce::PostOnly {
                        assert_eq!(taker_lots, 0, "post-only took liquidity");
                    }
                }
                OrderKind::Market { quantity_lots } => placed += u128::from(quantity_lots),
                OrderKind::MarketBuyByQuote { quote_amount } => {
                    let left = match events.last() {
                        Some(Event::Done { .. }) => 0,
                        Some(Event::Cancelled {
                            remaining: Remaining::QuoteAmount(left),
                            ..
                        }) => u128::from(*left),
                        other => panic!("by-quote order ended with {other:?}"),
                    };
                    assert_eq!(
                        spent + left,
                        u128::from(quote_amount),
                        "budget not conserved"
                    );
                }
            }
            // The taker's own unfilled lots.
            if let Some(Event::Cancelled {
                id,
                remaining: Remaining::Lots(left),
                reason: CancelReason::Unfilled,
            }) = events.last()
            {
                assert_eq!(*id, taker_id);
                cancelled += u128::from(*left);
            }
        }
        if let Command::Cancel { .. } = command {
            for event in &events {
                if let Event::Cancelled {
                    remaining: Remaining::Lots(left),
                    reason: CancelReason::Requested,
                    ..
                } = event
                {
                    cancelled += u128::from(*left);
                }
            }
        }

        // 3. Time priority inside each level: orders appear in arrival order.
        for view in queue(&after.bids).iter().chain(queue(&after.asks).iter()) {
            arrival.entry(view.1).or_insert_with(|| {
                arrivals += 1;
                arrivals
            });
        }
        for level in after.bids.iter().chain(&after.asks) {
            let order: Vec<u64> = level.orders.iter().map(|o| arrival[&o.id]).collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "level {} out of time order",
                level.price_ticks
            );
        }
        // Forget finished orders so a reused id counts as a new arrival.
        let live: Vec<OrderId> = queue(&after.bids)
            .iter()
            .chain(queue(&after.asks).iter())
            .map(|v| v.1)
            .collect();
        arrival.retain(|id, _| live.contains(id));

        // 4. Conservation of lots.
        assert_eq!(
            placed,
            2 * traded_both + traded_maker_only + cancelled + resting_lots(&after),
            "lots not conserved"
        );
        all.push(events);
    }
    (all, book.snapshot())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For random sequences of GTC/IOC/FOK/post-only/market/by-quote orders and cancels from
    /// three members: after every command the book is not crossed, makers are taken in price
    /// then time order at their own price, levels keep arrival order, FOK never partly fills,
    /// post-only never takes, and lots and quote budgets are conserved.
    #[test]
    fn invariants_hold(raws in prop::collection::vec(raw(), 0..300)) {
        run_checked(&commands(&raws));
    }

    /// Replaying the same commands into a fresh book gives identical events and an identical
    /// book (also compared through its serialized form, byte for byte), also when the second
    /// book is pre-sized with `OrderBook::with_capacity` (a different index layout).
    #[test]
    fn replay_is_deterministic(raws in prop::collection::vec(raw(), 0..300)) {
        let commands = commands(&raws);
        let run = |mut book: OrderBook, commands: &[Command]| {
            let events: Vec<Vec<Event>> = commands.iter().map(|c| book.apply(c)).collect();
            (events, book.snapshot())
        };
        let (events_a, book_a) = run(OrderBook::new(market()), &commands);
        let (events_b, book_b) = run(OrderBook::with_capacity(market(), 1 << 12), &commands);
        prop_assert_eq!(&events_a, &events_b);
        prop_assert_eq!(&book_a, &book_b);
        prop_assert_eq!(format!("{events_a:?}{book_a:?}"), format!("{events_b:?}{book_b:?}"));
    }
}
