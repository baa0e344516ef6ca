//! The order book: per side a `BTreeMap` from price to a level, each level a FIFO queue in
//! arrival order, and a hash index from order id to (level, arrival sequence), so a cancel
//! costs a hash lookup and a binary search in its level (O(log orders at the price)); the price
//! map is touched only when the cancel empties the level (O(log levels)).
//!
//! Hot-path choices (measured in `docs/benchmarks.md`):
//! - levels live in a slab (`levels`, reused through `free_levels`), and the price maps hold
//!   4-byte slab indices, so the maps stay small and a new price level reuses a queue's memory
//!   instead of allocating;
//! - a level's queue is a `VecDeque` of slots sorted by sequence; a cancel in the middle leaves a
//!   tombstone (`remaining_lots == 0`) that is dropped when it reaches either end or when
//!   tombstones outnumber live orders, so no cancel shifts a long queue;
//! - the index is an `FxHashMap`: a fixed hash function (no random seed), and the book never
//!   iterates it, so results do not depend on hashing. Its entries are 24 bytes (id, level slab
//!   index, sequence): a level keeps its slab index while it holds a live order, so the index
//!   need not name the side or price. [`OrderBook::with_capacity`] sizes it up front.

use std::collections::btree_map::OccupiedEntry;
use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::{
    CancelReason, Command, Event, Market, MemberId, OrderId, OrderKind, RejectReason, Remaining,
    Side, TimeInForce,
};

/// A freed level keeps at most this many slots of queue capacity (2 KiB) for its next use.
const FREE_LEVEL_SLOTS_MAX: usize = 64;
/// A level compacts its queue once it holds more tombstones than this and than live orders.
const TOMBSTONES_MIN: usize = 16;
/// [`OrderBook::with_capacity`] reserves room for at most this many price levels up front.
const LEVELS_RESERVED_MAX: usize = 4096;

/// A resting order in its level's queue; `remaining_lots == 0` marks a cancelled order whose
/// slot has not been dropped yet (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    /// The book's arrival sequence number: increasing along the queue.
    sequence: u64,
    id: OrderId,
    member: MemberId,
    remaining_lots: u64,
}

impl Slot {
    fn is_live(&self) -> bool {
        self.remaining_lots > 0
    }
}

/// One price level: orders in arrival order. The first and last slots are always live, so a
/// level with no live order has an empty queue (and is removed from the book).
#[derive(Debug, Clone)]
struct Level {
    queue: VecDeque<Slot>,
    /// Live orders in `queue`.
    live: usize,
    total_lots: u64,
    /// Where the level sits while it is in use (set by `take_level`).
    side: Side,
    price_ticks: u64,
}

impl Level {
    fn new(side: Side, price_ticks: u64) -> Self {
        Level {
            queue: VecDeque::new(),
            live: 0,
            total_lots: 0,
            side,
            price_ticks,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Live orders, first to match first.
    fn orders(&self) -> impl Iterator<Item = &Slot> {
        self.queue.iter().filter(|slot| slot.is_live())
    }

    fn push(&mut self, slot: Slot) {
        assert!(slot.is_live(), "only unfilled orders rest");
        debug_assert!(
            self.queue
                .back()
                .is_none_or(|last| last.sequence < slot.sequence),
            "sequence numbers grow"
        );
        self.total_lots = self
            .total_lots
            .checked_add(slot.remaining_lots)
            .expect("level total fits u64");
        self.live += 1;
        self.queue.push_back(slot);
    }

    fn position(&self, sequence: u64) -> Option<usize> {
        // Most levels hold one or two orders: try the ends before searching.
        let position = if self.queue.front()?.sequence == sequence {
            0
        } else if self.queue.back()?.sequence == sequence {
            self.queue.len() - 1
        } else {
            self.queue
                .binary_search_by_key(&sequence, |slot| slot.sequence)
                .ok()?
        };
        Some(position).filter(|&position| self.queue[position].is_live())
    }

    /// Takes the live order at `position` out of the queue, returning it.
    fn remove(&mut self, position: usize) -> Slot {
        let slot = &mut self.queue[position];
        assert!(slot.is_live(), "removing a live order");
        let removed = slot.clone();
        slot.remaining_lots = 0;
        self.total_lots = self
            .total_lots
            .checked_sub(removed.remaining_lots)
            .expect("level total covers its orders");
        self.live -= 1;
        // Keep both ends live; compact when tombstones dominate.
        while self.queue.front().is_some_and(|slot| !slot.is_live()) {
            self.queue.pop_front();
        }
        while self.queue.back().is_some_and(|slot| !slot.is_live()) {
            self.queue.pop_back();
        }
        let tombstones = self.queue.len() - self.live;
        if tombstones > TOMBSTONES_MIN && tombstones > self.live {
            self.queue.retain(Slot::is_live);
        }
        debug_assert_eq!(
            self.live == 0,
            self.queue.is_empty(),
            "empty iff no live order"
        );
        removed
    }
}

/// Where a live order sits: its level in the slab (which keeps that slab index while the order
/// is live) and its arrival sequence in the level's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    level_id: LevelId,
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
    /// Price → index in `levels`.
    bids: BTreeMap<u64, LevelId>,
    asks: BTreeMap<u64, LevelId>,
    /// Slab of levels: those named in `bids` or `asks`, and free (empty) ones.
    levels: Vec<Level>,
    free_levels: Vec<LevelId>,
    index: FxHashMap<OrderId, Location>,
    next_sequence: u64,
}

/// Index of a level in `OrderBook::levels`.
type LevelId = u32;

/// Takes a free level from the slab (or adds one) for a new price.
fn take_level(
    levels: &mut Vec<Level>,
    free_levels: &mut Vec<LevelId>,
    side: Side,
    price_ticks: u64,
) -> LevelId {
    if let Some(level_id) = free_levels.pop() {
        let level = &mut levels[level_id as usize];
        debug_assert!(level.is_empty(), "free levels are empty");
        level.side = side;
        level.price_ticks = price_ticks;
        return level_id;
    }
    let level_id = LevelId::try_from(levels.len()).expect("fewer than 2^32 price levels");
    levels.push(Level::new(side, price_ticks));
    level_id
}

/// Returns an emptied level to the slab, keeping a small queue allocation for its next use.
fn free_level(levels: &mut [Level], free_levels: &mut Vec<LevelId>, level_id: LevelId) {
    let level = &mut levels[level_id as usize];
    assert!(level.is_empty(), "only empty levels are freed");
    assert_eq!(level.total_lots, 0, "an empty level holds no lots");
    level.queue.shrink_to(FREE_LEVEL_SLOTS_MAX);
    free_levels.push(level_id);
}

impl OrderBook {
    /// An empty book for `market`.
    pub fn new(market: Market) -> Self {
        Self::with_capacity(market, 0)
    }

    /// An empty book for `market` with room for `orders` resting orders (a count of orders, not
    /// lots) before its order-id index grows, as an operator sizes a book at start.
    ///
    /// Allocates up front, once: the id index (24 bytes plus one control byte per bucket; the
    /// buckets are the next power of two ≥ `orders` × 8 / 7, so 5,000,000 orders take 2²³
    /// buckets, about 210 MB), and a slab for `min(orders, 4096)` price levels (a few hundred
    /// KB). Queues of orders within a level still grow as orders arrive. The book behaves
    /// exactly like [`OrderBook::new`]'s (same events, same snapshots); only when memory is
    /// allocated differs.
    pub fn with_capacity(market: Market, orders: usize) -> Self {
        let levels_reserved = orders.min(LEVELS_RESERVED_MAX);
        OrderBook {
            market,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            levels: Vec::with_capacity(levels_reserved),
            free_levels: Vec::with_capacity(levels_reserved),
            index: FxHashMap::with_capacity_and_hasher(orders, Default::default()),
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
        let level = &self.levels[location.level_id as usize];
        let position = level.position(location.sequence)?;
        Some(level.queue[position].remaining_lots)
    }

    /// Aggregated depth: up to `levels_max` price levels per side, best first.
    pub fn depth(&self, levels_max: usize) -> Depth {
        let level = |(price_ticks, level_id): (&u64, &LevelId)| DepthLevel {
            price_ticks: *price_ticks,
            total_lots: self.levels[*level_id as usize].total_lots,
        };
        Depth {
            bids: self.bids.iter().rev().take(levels_max).map(level).collect(),
            asks: self.asks.iter().take(levels_max).map(level).collect(),
        }
    }

    /// The whole book in priority order.
    pub fn snapshot(&self) -> BookSnapshot {
        let view = |prices: &mut dyn Iterator<Item = (&u64, &LevelId)>| -> Vec<LevelView> {
            prices
                .map(|(price, level_id)| LevelView {
                    price_ticks: *price,
                    orders: self.levels[*level_id as usize]
                        .orders()
                        .map(|o| OrderView {
                            id: o.id,
                            member: o.member,
                            remaining_lots: o.remaining_lots,
                        })
                        .collect(),
                })
                .collect()
        };
        BookSnapshot {
            bids: view(&mut self.bids.iter().rev()),
            asks: view(&mut self.asks.iter()),
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
        let prices: Box<dyn Iterator<Item = (&u64, &LevelId)>> = match side {
            Side::Buy => Box::new(self.asks.range(..=limit_price_ticks)),
            Side::Sell => Box::new(self.bids.range(limit_price_ticks..).rev()),
        };
        for (_, level_id) in prices {
            for order in self.levels[*level_id as usize]
                .orders()
                .filter(|o| o.member != member)
            {
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
        let book = match taker.side {
            Side::Buy => &mut self.asks,
            Side::Sell => &mut self.bids,
        };
        let (levels, free_levels, index) =
            (&mut self.levels, &mut self.free_levels, &mut self.index);
        loop {
            let level_entry: Option<OccupiedEntry<'_, u64, LevelId>> = match taker.side {
                Side::Buy => book.first_entry(),
                Side::Sell => book.last_entry(),
            };
            let Some(level_entry) = level_entry else {
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
            let level_id = *level_entry.get();
            let level = &mut levels[level_id as usize];
            debug_assert_eq!(level.price_ticks, price_ticks, "a level knows its price");
            let maker = level.queue.front_mut().expect("empty levels are removed");
            assert!(maker.is_live(), "a level's first order is live");

            if maker.member == taker.member {
                let cancelled = level.remove(0);
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
                events.push(Event::Trade {
                    maker_id: maker.id,
                    taker_id: taker.id,
                    maker_member: maker.member,
                    taker_member: taker.member,
                    taker_side: taker.side,
                    price_ticks,
                    quantity_lots,
                });
                if quantity_lots == maker.remaining_lots {
                    let filled = level.remove(0);
                    index
                        .remove(&filled.id)
                        .expect("resting orders are indexed");
                    events.push(Event::Done { id: filled.id });
                } else {
                    maker.remaining_lots -= quantity_lots;
                    level.total_lots = level
                        .total_lots
                        .checked_sub(quantity_lots)
                        .expect("level total covers its orders");
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
            if level.is_empty() {
                level_entry.remove();
                free_level(levels, free_levels, level_id);
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
        let (levels, free_levels) = (&mut self.levels, &mut self.free_levels);
        let level_id = *book
            .entry(price_ticks)
            .or_insert_with(|| take_level(levels, free_levels, taker.side, price_ticks));
        levels[level_id as usize].push(Slot {
            sequence,
            id: taker.id,
            member: taker.member,
            remaining_lots,
        });
        let previous = self.index.insert(taker.id, Location { level_id, sequence });
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
        let level_id = location.level_id;
        let level = &mut self.levels[level_id as usize];
        let position = level
            .position(location.sequence)
            .expect("indexed orders are in their level");
        if level.queue[position].member != member {
            events.push(Event::Rejected {
                id,
                reason: RejectReason::ForeignOrder,
            });
            return;
        }
        let order = level.remove(position);
        assert_eq!(order.id, id, "the index points at the order");
        if level.is_empty() {
            let (side, price_ticks) = (level.side, level.price_ticks);
            let book = match side {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            };
            let removed = book.remove(&price_ticks);
            assert_eq!(removed, Some(level_id), "a level is listed at its price");
            free_level(&mut self.levels, &mut self.free_levels, level_id);
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
