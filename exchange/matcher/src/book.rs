//! The order book: price levels in `BTreeMap`s, each level a FIFO keyed by arrival sequence, and
//! an index from order id to (side, price, sequence) so a cancel costs O(log n).

use std::collections::BTreeMap;
use std::collections::btree_map::OccupiedEntry;

use serde::{Deserialize, Serialize};

use crate::{
    CancelReason, Command, Event, Market, MemberId, OrderId, OrderKind, RejectReason, Remaining,
    Side, TimeInForce,
};

/// A resting order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resting {
    id: OrderId,
    member: MemberId,
    remaining_lots: u64,
}

/// One price level: orders in arrival order (key = the book's arrival sequence number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Level {
    orders: BTreeMap<u64, Resting>,
    total_lots: u64,
}

/// Where a live order sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    side: Side,
    price_ticks: u64,
    sequence: u64,
}

/// A resting order as shown in a [`BookSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Order id.
    pub id: OrderId,
    /// Owner.
    pub member: MemberId,
    /// Unfilled quantity.
    pub remaining_lots: u64,
}

/// A price level as shown in a [`BookSnapshot`]: orders in time priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelView {
    /// Level price.
    pub price_ticks: u64,
    /// Orders, first to match first.
    pub orders: Vec<OrderView>,
}

/// The whole book in priority order (best price first on each side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    /// Bids, highest price first.
    pub bids: Vec<LevelView>,
    /// Asks, lowest price first.
    pub asks: Vec<LevelView>,
}

/// The incoming order while it matches.
struct Taker {
    id: OrderId,
    member: MemberId,
    side: Side,
}

/// How much the taker still wants.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Lots, optionally bounded by a limit price.
    Lots {
        remaining_lots: u64,
        limit_price_ticks: Option<u64>,
    },
    /// A quote budget (price × lots units), buys only.
    Quote { budget: u64 },
}

/// One market's order book. See the crate docs for the event protocol.
#[derive(Debug, Clone)]
pub struct OrderBook {
    market: Market,
    bids: BTreeMap<u64, Level>,
    asks: BTreeMap<u64, Level>,
    index: BTreeMap<OrderId, Location>,
    next_sequence: u64,
}

impl OrderBook {
    /// An empty book for `market`.
    pub fn new(market: Market) -> Self {
        OrderBook {
            market,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            index: BTreeMap::new(),
            next_sequence: 0,
        }
    }

    /// The market this book matches.
    pub fn market(&self) -> &Market {
        &self.market
    }

    /// Applies one command and returns its events.
    pub fn apply(&mut self, command: &Command) -> Vec<Event> {
        let mut events = Vec::new();
        self.execute(command, &mut events);
        events
    }

    /// Applies one command, appending its events to `events` (reuse the vector on hot paths).
    pub fn execute(&mut self, command: &Command, events: &mut Vec<Event>) {
        match *command {
            Command::Place {
                id,
                member,
                side,
                kind,
            } => self.place(id, member, side, kind, events),
            Command::Cancel { id, member } => self.cancel(id, member, events),
        }
    }

    /// Highest bid price, if any.
    pub fn best_bid_ticks(&self) -> Option<u64> {
        self.bids.keys().next_back().copied()
    }

    /// Lowest ask price, if any.
    pub fn best_ask_ticks(&self) -> Option<u64> {
        self.asks.keys().next().copied()
    }

    /// Number of live orders.
    pub fn order_count(&self) -> usize {
        self.index.len()
    }

    /// Unfilled lots of a live order.
    pub fn remaining_lots(&self, id: OrderId) -> Option<u64> {
        let location = self.index.get(&id)?;
        let level = self.side(location.side).get(&location.price_ticks)?;
        level
            .orders
            .get(&location.sequence)
            .map(|order| order.remaining_lots)
    }

    /// Aggregated depth: up to `levels_max` price levels per side, best first.
    pub fn depth(&self, levels_max: usize) -> Depth {
        let level = |(price_ticks, level): (&u64, &Level)| DepthLevel {
            price_ticks: *price_ticks,
            total_lots: level.total_lots,
        };
        Depth {
            bids: self.bids.iter().rev().take(levels_max).map(level).collect(),
            asks: self.asks.iter().take(levels_max).map(level).collect(),
        }
    }

    /// The whole book in priority order.
    pub fn snapshot(&self) -> BookSnapshot {
        fn view<'a>(levels: impl Iterator<Item = (&'a u64, &'a Level)>) -> Vec<LevelView> {
            levels
                .map(|(price, level)| LevelView {
                    price_ticks: *price,
                    orders: level
                        .orders
                        .values()
                        .map(|o| OrderView {
                            id: o.id,
                            member: o.member,
                            remaining_lots: o.remaining_lots,
                        })
                        .collect(),
                })
                .collect()
        }
        BookSnapshot {
            bids: view(self.bids.iter().rev()),
            asks: view(self.asks.iter()),
        }
    }

    fn side(&self, side: Side) -> &BTreeMap<u64, Level> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn validate(&self, id: OrderId, side: Side, kind: OrderKind) -> Result<(), RejectReason> {
        let min_order_lots = self.market.min_order_lots;
        let check_lots = |quantity_lots: u64| {
            if quantity_lots == 0 {
                Err(RejectReason::ZeroQuantity)
            } else if quantity_lots < min_order_lots {
                Err(RejectReason::BelowMinimum {
                    quantity_lots,
                    min_order_lots,
                })
            } else {
                Ok(())
            }
        };
        match kind {
            OrderKind::Limit {
                price_ticks,
                quantity_lots,
                ..
            } => {
                check_lots(quantity_lots)?;
                if price_ticks == 0 {
                    return Err(RejectReason::ZeroPrice);
                }
            }
            OrderKind::Market { quantity_lots } => check_lots(quantity_lots)?,
            OrderKind::MarketBuyByQuote { quote_amount } => {
                if side != Side::Buy {
                    return Err(RejectReason::SellByQuote);
                }
                if quote_amount == 0 {
                    return Err(RejectReason::ZeroQuantity);
                }
            }
        }
        if self.index.contains_key(&id) {
            return Err(RejectReason::DuplicateId);
        }
        Ok(())
    }

    /// Lots a taker of `member` could fill at prices no worse than `limit_price_ticks`,
    /// counting other members' orders only, stopping once `enough_lots` is reached.
    fn fillable_lots(
        &self,
        member: MemberId,
        side: Side,
        limit_price_ticks: u64,
        enough_lots: u64,
    ) -> u64 {
        let mut fillable: u64 = 0;
        let levels: Box<dyn Iterator<Item = (&u64, &Level)>> = match side {
            Side::Buy => Box::new(self.asks.range(..=limit_price_ticks)),
            Side::Sell => Box::new(self.bids.range(limit_price_ticks..).rev()),
        };
        for (_, level) in levels {
            for order in level.orders.values().filter(|o| o.member != member) {
                fillable = fillable.saturating_add(order.remaining_lots);
                if fillable >= enough_lots {
                    return fillable;
                }
            }
        }
        fillable
    }

    fn place(
        &mut self,
        id: OrderId,
        member: MemberId,
        side: Side,
        kind: OrderKind,
        events: &mut Vec<Event>,
    ) {
        if let Err(reason) = self.validate(id, side, kind) {
            events.push(Event::Rejected { id, reason });
            return;
        }
        // Checks that refuse without touching the book.
        if let OrderKind::Limit {
            price_ticks,
            quantity_lots,
            tif,
        } = kind
        {
            match tif {
                TimeInForce::PostOnly => {
                    let best_opposite = match side {
                        Side::Buy => self.best_ask_ticks().filter(|ask| *ask <= price_ticks),
                        Side::Sell => self.best_bid_ticks().filter(|bid| *bid >= price_ticks),
                    };
                    if let Some(best_opposite_price_ticks) = best_opposite {
                        let reason = RejectReason::PostOnlyWouldCross {
                            best_opposite_price_ticks,
                        };
                        events.push(Event::Rejected { id, reason });
                        return;
                    }
                }
                TimeInForce::Fok => {
                    let fillable_lots =
                        self.fillable_lots(member, side, price_ticks, quantity_lots);
                    if fillable_lots < quantity_lots {
                        events.push(Event::Rejected {
                            id,
                            reason: RejectReason::FokNotFillable { fillable_lots },
                        });
                        return;
                    }
                }
                TimeInForce::Gtc | TimeInForce::Ioc => {}
            }
        }
        events.push(Event::Accepted { id });

        let want = match kind {
            OrderKind::Limit {
                price_ticks,
                quantity_lots,
                ..
            } => Want::Lots {
                remaining_lots: quantity_lots,
                limit_price_ticks: Some(price_ticks),
            },
            OrderKind::Market { quantity_lots } => Want::Lots {
                remaining_lots: quantity_lots,
                limit_price_ticks: None,
            },
            OrderKind::MarketBuyByQuote { quote_amount } => Want::Quote {
                budget: quote_amount,
            },
        };
        let taker = Taker { id, member, side };
        let left = self.match_taker(&taker, want, events);

        match (kind, left) {
            (
                _,
                Want::Lots {
                    remaining_lots: 0, ..
                },
            )
            | (_, Want::Quote { budget: 0 }) => {
                events.push(Event::Done { id });
            }
            (
                OrderKind::Limit {
                    price_ticks,
                    tif: TimeInForce::Gtc | TimeInForce::PostOnly,
                    ..
                },
                Want::Lots { remaining_lots, .. },
            ) => {
                self.rest(&taker, price_ticks, remaining_lots);
            }
            (_, Want::Lots { remaining_lots, .. }) => {
                // FOK was checked fillable, so only IOC and market orders get here.
                assert!(
                    !matches!(
                        kind,
                        OrderKind::Limit {
                            tif: TimeInForce::Fok,
                            ..
                        }
                    ),
                    "a fillable fill-or-kill order left {remaining_lots} lots"
                );
                events.push(Event::Cancelled {
                    id,
                    remaining: Remaining::Lots(remaining_lots),
                    reason: CancelReason::Unfilled,
                });
            }
            (_, Want::Quote { budget }) => {
                events.push(Event::Cancelled {
                    id,
                    remaining: Remaining::QuoteAmount(budget),
                    reason: CancelReason::Unfilled,
                });
            }
        }
    }

    /// Matches the taker against the opposite side in price-time priority; returns what is
    /// still wanted.
    fn match_taker(&mut self, taker: &Taker, mut want: Want, events: &mut Vec<Event>) -> Want {
        let (book, index) = match taker.side {
            Side::Buy => (&mut self.asks, &mut self.index),
            Side::Sell => (&mut self.bids, &mut self.index),
        };
        loop {
            let level_entry: Option<OccupiedEntry<'_, u64, Level>> = match taker.side {
                Side::Buy => book.first_entry(),
                Side::Sell => book.last_entry(),
            };
            let Some(mut level_entry) = level_entry else {
                break;
            };
            let price_ticks = *level_entry.key();
            let cap_lots = match want {
                Want::Lots {
                    remaining_lots,
                    limit_price_ticks,
                } => {
                    let acceptable = match (taker.side, limit_price_ticks) {
                        (_, None) => true,
                        (Side::Buy, Some(limit)) => price_ticks <= limit,
                        (Side::Sell, Some(limit)) => price_ticks >= limit,
                    };
                    if !acceptable {
                        break;
                    }
                    remaining_lots
                }
                Want::Quote { budget } => budget / price_ticks,
            };
            if cap_lots == 0 {
                break;
            }
            let level = level_entry.get_mut();
            let mut order_entry = level
                .orders
                .first_entry()
                .expect("empty levels are removed");
            let maker = order_entry.get_mut();

            if maker.member == taker.member {
                let cancelled = order_entry.remove();
                level.total_lots = level
                    .total_lots
                    .checked_sub(cancelled.remaining_lots)
                    .expect("level total covers its orders");
                index
                    .remove(&cancelled.id)
                    .expect("resting orders are indexed");
                events.push(Event::Cancelled {
                    id: cancelled.id,
                    remaining: Remaining::Lots(cancelled.remaining_lots),
                    reason: CancelReason::SelfTrade,
                });
            } else {
                let quantity_lots = cap_lots.min(maker.remaining_lots);
                maker.remaining_lots -= quantity_lots;
                level.total_lots = level
                    .total_lots
                    .checked_sub(quantity_lots)
                    .expect("level total covers its orders");
                events.push(Event::Trade {
                    maker_id: maker.id,
                    taker_id: taker.id,
                    maker_member: maker.member,
                    taker_member: taker.member,
                    taker_side: taker.side,
                    price_ticks,
                    quantity_lots,
                });
                if maker.remaining_lots == 0 {
                    let filled = order_entry.remove();
                    index
                        .remove(&filled.id)
                        .expect("resting orders are indexed");
                    events.push(Event::Done { id: filled.id });
                }
                want = match want {
                    Want::Lots {
                        remaining_lots,
                        limit_price_ticks,
                    } => Want::Lots {
                        remaining_lots: remaining_lots - quantity_lots,
                        limit_price_ticks,
                    },
                    Want::Quote { budget } => {
                        let cost = u128::from(price_ticks) * u128::from(quantity_lots);
                        let left = u128::from(budget)
                            .checked_sub(cost)
                            .expect("cost is within the budget");
                        Want::Quote {
                            budget: u64::try_from(left).expect("less than the budget fits u64"),
                        }
                    }
                };
            }
            if level_entry.get().orders.is_empty() {
                assert_eq!(
                    level_entry.get().total_lots,
                    0,
                    "an empty level holds no lots"
                );
                level_entry.remove();
            }
        }
        want
    }

    fn rest(&mut self, taker: &Taker, price_ticks: u64, remaining_lots: u64) {
        assert!(remaining_lots > 0, "only unfilled orders rest");
        let sequence = self.next_sequence;
        self.next_sequence = sequence.checked_add(1).expect("2^64 orders");
        let book = match taker.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = book.entry(price_ticks).or_default();
        level.total_lots = level
            .total_lots
            .checked_add(remaining_lots)
            .expect("level total fits u64");
        level.orders.insert(
            sequence,
            Resting {
                id: taker.id,
                member: taker.member,
                remaining_lots,
            },
        );
        let previous = self.index.insert(
            taker.id,
            Location {
                side: taker.side,
                price_ticks,
                sequence,
            },
        );
        assert!(
            previous.is_none(),
            "duplicate ids are rejected before resting"
        );
        debug_assert!(
            matches!((self.best_bid_ticks(), self.best_ask_ticks()), (Some(b), Some(a)) if b < a)
                || self.bids.is_empty()
                || self.asks.is_empty(),
            "book crossed"
        );
    }

    fn cancel(&mut self, id: OrderId, member: MemberId, events: &mut Vec<Event>) {
        let Some(location) = self.index.get(&id).copied() else {
            events.push(Event::Rejected {
                id,
                reason: RejectReason::UnknownOrder,
            });
            return;
        };
        let book = match location.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = book
            .get_mut(&location.price_ticks)
            .expect("indexed orders have a level");
        let owner = level
            .orders
            .get(&location.sequence)
            .expect("indexed orders are in their level")
            .member;
        if owner != member {
            events.push(Event::Rejected {
                id,
                reason: RejectReason::ForeignOrder,
            });
            return;
        }
        let order = level
            .orders
            .remove(&location.sequence)
            .expect("checked above");
        level.total_lots = level
            .total_lots
            .checked_sub(order.remaining_lots)
            .expect("level total covers its orders");
        if level.orders.is_empty() {
            book.remove(&location.price_ticks);
        }
        self.index.remove(&id);
        events.push(Event::Cancelled {
            id,
            remaining: Remaining::Lots(order.remaining_lots),
            reason: CancelReason::Requested,
        });
    }
}

#[cfg(test)]
mod tests;

/// One aggregated price level of [`OrderBook::depth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DepthLevel {
    /// Price in ticks.
    pub price_ticks: u64,
    /// Sum of the resting lots at that price.
    pub total_lots: u64,
}

/// Aggregated order book depth, best price first on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Depth {
    /// Buy side, highest price first.
    pub bids: Vec<DepthLevel>,
    /// Sell side, lowest price first.
    pub asks: Vec<DepthLevel>,
}
