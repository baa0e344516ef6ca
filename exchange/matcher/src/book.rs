//! The order book: per side a price ladder (`ladder::Ladder`, an ordered map from price to a
//! level); each level a FIFO list of its resting orders in arrival order, linked through a slab
//! of order nodes; and a hash index from order id to its node. A cancel costs a hash lookup and
//! an unlink (O(1)); the ladder is touched only when a level is created or emptied (a few
//! bitmap words and a hash entry).
//!
//! Hot-path choices (measured in `docs/benchmarks.md`):
//! - resting orders live in a slab (`orders`, reused through `free_orders`, last freed first, so
//!   a new order lands where one was just removed) and name their level's neighbours by 4-byte
//!   slab indices. A level is 32 bytes with no allocation of its own: placing, filling or
//!   cancelling an order touches its node, its neighbours' nodes and its level, nothing else,
//!   and the book allocates only when a slab grows past its largest size so far;
//! - levels live in a slab too (`levels`, reused through `free_levels`), and the price ladders
//!   hold 4-byte slab indices;
//! - the index is a `HashMap` with a fixed hash function (no random seed, `book/id_hash.rs`)
//!   that puts consecutive ids in consecutive buckets, so new orders (ascending ids) are
//!   probed and inserted in memory order; the book never iterates it, so results do not depend
//!   on hashing. Its entries are 16 bytes (id, node index). [`OrderBook::with_capacity`] sizes
//!   it and the order slab up front.

mod id_hash;
mod ladder;

use std::collections::HashMap;

use id_hash::BuildOrderIdHasher;
use ladder::Ladder;
use serde::{Deserialize, Serialize};

use crate::{
    CancelReason, Command, Event, Market, MemberId, OrderId, OrderKind, RejectReason, Remaining,
    Side, TimeInForce,
};

/// [`OrderBook::with_capacity`] reserves room for at most this many price levels up front.
const LEVELS_RESERVED_MAX: usize = 4096;

/// Index of an order node in `OrderBook::orders`.
type NodeId = u32;

/// The "no node" link: the end of a level's list, or an empty level's head and tail.
const NIL: NodeId = NodeId::MAX;

/// Index of a level in `OrderBook::levels`.
type LevelId = u32;

/// A resting order: one node of its level's list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resting {
    id: OrderId,
    member: MemberId,
    /// Unfilled lots, > 0 while the order rests.
    remaining_lots: u64,
    /// The level it rests in.
    level_id: LevelId,
    /// The order before it in time priority, or `NIL` for the level's first.
    prev: NodeId,
    /// The order after it, or `NIL` for the level's last.
    next: NodeId,
}

/// One price level: its orders' list in arrival order (first to match first) and their total.
/// A level with no order (`head == NIL`) is not in the book; it waits in `free_levels`.
#[derive(Debug, Clone)]
struct Level {
    head: NodeId,
    tail: NodeId,
    total_lots: u64,
    /// Where the level sits while it is in use (set by `take_level`).
    price_ticks: u64,
    side: Side,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// The orders of `level`, first to match first.
fn level_orders<'a>(orders: &'a [Resting], level: &Level) -> impl Iterator<Item = &'a Resting> {
    let mut next = level.head;
    std::iter::from_fn(move || {
        let order = orders.get(next as usize)?;
        next = order.next;
        Some(order)
    })
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
    bids: Ladder,
    asks: Ladder,
    /// Slab of levels: those named in `bids` or `asks`, and free (empty) ones.
    levels: Vec<Level>,
    free_levels: Vec<LevelId>,
    /// Slab of order nodes: the resting orders, and free ones.
    orders: Vec<Resting>,
    free_orders: Vec<NodeId>,
    index: HashMap<OrderId, NodeId, BuildOrderIdHasher>,
}

/// Takes a free level from the slab (or adds one) for a new price.
fn take_level(
    levels: &mut Vec<Level>,
    free_levels: &mut Vec<LevelId>,
    side: Side,
    price_ticks: u64,
) -> LevelId {
    let level = Level {
        head: NIL,
        tail: NIL,
        total_lots: 0,
        price_ticks,
        side,
    };
    if let Some(level_id) = free_levels.pop() {
        debug_assert!(
            levels[level_id as usize].is_empty(),
            "free levels are empty"
        );
        levels[level_id as usize] = level;
        return level_id;
    }
    let level_id = LevelId::try_from(levels.len()).expect("fewer than 2^32 price levels");
    levels.push(level);
    level_id
}

/// Returns an emptied level to the slab.
fn free_level(levels: &[Level], free_levels: &mut Vec<LevelId>, level_id: LevelId) {
    let level = &levels[level_id as usize];
    assert!(level.is_empty(), "only empty levels are freed");
    assert_eq!(level.total_lots, 0, "an empty level holds no lots");
    free_levels.push(level_id);
}

/// Puts `order` at the back of its level's list (a node from the slab, reused when one is
/// free) and returns its node.
fn push_back(
    levels: &mut [Level],
    orders: &mut Vec<Resting>,
    free_orders: &mut Vec<NodeId>,
    mut order: Resting,
) -> NodeId {
    assert!(order.remaining_lots > 0, "only unfilled orders rest");
    let level = &mut levels[order.level_id as usize];
    level.total_lots = level
        .total_lots
        .checked_add(order.remaining_lots)
        .expect("level total fits u64");
    order.prev = level.tail;
    order.next = NIL;
    let node = match free_orders.pop() {
        Some(node) => {
            orders[node as usize] = order;
            node
        }
        None => {
            let node = NodeId::try_from(orders.len())
                .ok()
                .filter(|&node| node != NIL)
                .expect("fewer than 2^32 − 1 resting orders");
            orders.push(order);
            node
        }
    };
    match level.tail {
        NIL => level.head = node,
        tail => orders[tail as usize].next = node,
    }
    level.tail = node;
    node
}

/// Takes the order at `node` out of its level's list and frees its node, returning the order.
/// The caller removes it from the index, and the level from its price map if it is now empty.
fn unlink(
    levels: &mut [Level],
    orders: &mut [Resting],
    free_orders: &mut Vec<NodeId>,
    node: NodeId,
) -> Resting {
    let order = orders[node as usize].clone();
    assert!(order.remaining_lots > 0, "removing a resting order");
    let level = &mut levels[order.level_id as usize];
    level.total_lots = level
        .total_lots
        .checked_sub(order.remaining_lots)
        .expect("level total covers its orders");
    match order.prev {
        NIL => level.head = order.next,
        prev => orders[prev as usize].next = order.next,
    }
    match order.next {
        NIL => level.tail = order.prev,
        next => orders[next as usize].prev = order.prev,
    }
    debug_assert_eq!(
        level.is_empty(),
        level.total_lots == 0,
        "a level holds lots iff it holds orders"
    );
    free_orders.push(node);
    order
}

impl OrderBook {
    /// An empty book for `market`.
    pub fn new(market: Market) -> Self {
        Self::with_capacity(market, 0)
    }

    /// An empty book for `market` with room for `orders` resting orders (a count of orders, not
    /// lots) before its order-id index grows, as an operator sizes a book at start.
    ///
    /// Allocates up front, once: the id index (16 bytes plus one control byte per bucket; the
    /// buckets are the next power of two ≥ `orders` × 8 / 7, so 5,000,000 orders take 2²³
    /// buckets, about 143 MB), the order slab (40 bytes an order: 200 MB for 5,000,000) and a
    /// slab for `min(orders, 4096)` price levels (32 bytes each). The book behaves exactly like
    /// [`OrderBook::new`]'s (same events, same snapshots); only when memory is allocated
    /// differs.
    pub fn with_capacity(market: Market, orders: usize) -> Self {
        let levels_reserved = orders.min(LEVELS_RESERVED_MAX);
        OrderBook {
            market,
            bids: Ladder::new(),
            asks: Ladder::new(),
            levels: Vec::with_capacity(levels_reserved),
            free_levels: Vec::with_capacity(levels_reserved),
            orders: Vec::with_capacity(orders),
            free_orders: Vec::with_capacity(orders),
            index: HashMap::with_capacity_and_hasher(orders, BuildOrderIdHasher::default()),
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
        self.bids.last()
    }

    /// Lowest ask price, if any.
    pub fn best_ask_ticks(&self) -> Option<u64> {
        self.asks.first()
    }

    /// Number of live orders.
    pub fn order_count(&self) -> usize {
        self.index.len()
    }

    /// Unfilled lots of a live order.
    pub fn remaining_lots(&self, id: OrderId) -> Option<u64> {
        let node = self.index.get(&id)?;
        Some(self.orders[*node as usize].remaining_lots)
    }

    /// Aggregated depth: up to `levels_max` price levels per side, best first.
    pub fn depth(&self, levels_max: usize) -> Depth {
        let level = |(price_ticks, level_id): (u64, LevelId)| DepthLevel {
            price_ticks,
            total_lots: self.levels[level_id as usize].total_lots,
        };
        Depth {
            bids: self.bids.descending().take(levels_max).map(level).collect(),
            asks: self.asks.ascending().take(levels_max).map(level).collect(),
        }
    }

    /// The whole book in priority order.
    pub fn snapshot(&self) -> BookSnapshot {
        let view = |prices: &mut dyn Iterator<Item = (u64, LevelId)>| -> Vec<LevelView> {
            prices
                .map(|(price_ticks, level_id)| LevelView {
                    price_ticks,
                    orders: level_orders(&self.orders, &self.levels[level_id as usize])
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
            bids: view(&mut self.bids.descending()),
            asks: view(&mut self.asks.ascending()),
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
        let prices: Box<dyn Iterator<Item = (u64, LevelId)>> = match side {
            Side::Buy => Box::new(
                self.asks
                    .ascending()
                    .take_while(|&(price, _)| price <= limit_price_ticks),
            ),
            Side::Sell => Box::new(
                self.bids
                    .descending()
                    .take_while(|&(price, _)| price >= limit_price_ticks),
            ),
        };
        for (_, level_id) in prices {
            for order in level_orders(&self.orders, &self.levels[level_id as usize])
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
        let (levels, free_levels, orders, free_orders, index) = (
            &mut self.levels,
            &mut self.free_levels,
            &mut self.orders,
            &mut self.free_orders,
            &mut self.index,
        );
        loop {
            let best = match taker.side {
                Side::Buy => book.first(),
                Side::Sell => book.last(),
            };
            let Some(price_ticks) = best else {
                break;
            };
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
            let level_id = book.get(price_ticks).expect("a listed price has a level");
            let level = &mut levels[level_id as usize];
            debug_assert_eq!(level.price_ticks, price_ticks, "a level knows its price");
            let maker_node = level.head;
            assert_ne!(maker_node, NIL, "empty levels are removed");
            let maker = &mut orders[maker_node as usize];

            if maker.member == taker.member {
                let cancelled = unlink(levels, orders, free_orders, maker_node);
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
                    let filled = unlink(levels, orders, free_orders, maker_node);
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
            if levels[level_id as usize].is_empty() {
                book.remove(price_ticks);
                free_level(levels, free_levels, level_id);
            }
        }
        want
    }

    fn rest(&mut self, taker: &Taker, price_ticks: u64, remaining_lots: u64) {
        let book = match taker.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let (levels, free_levels) = (&mut self.levels, &mut self.free_levels);
        let level_id = book.get_or_insert_with(price_ticks, || {
            take_level(levels, free_levels, taker.side, price_ticks)
        });
        let order = Resting {
            id: taker.id,
            member: taker.member,
            remaining_lots,
            level_id,
            prev: NIL,
            next: NIL,
        };
        let node = push_back(levels, &mut self.orders, &mut self.free_orders, order);
        let previous = self.index.insert(taker.id, node);
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
        let Some(node) = self.index.get(&id).copied() else {
            events.push(Event::Rejected {
                id,
                reason: RejectReason::UnknownOrder,
            });
            return;
        };
        if self.orders[node as usize].member != member {
            events.push(Event::Rejected {
                id,
                reason: RejectReason::ForeignOrder,
            });
            return;
        }
        let order = unlink(
            &mut self.levels,
            &mut self.orders,
            &mut self.free_orders,
            node,
        );
        assert_eq!(order.id, id, "the index points at the order");
        let level_id = order.level_id;
        let level = &self.levels[level_id as usize];
        if level.is_empty() {
            let (side, price_ticks) = (level.side, level.price_ticks);
            let book = match side {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            };
            let removed = book.remove(price_ticks);
            assert_eq!(removed, Some(level_id), "a level is listed at its price");
            free_level(&self.levels, &mut self.free_levels, level_id);
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
