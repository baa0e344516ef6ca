//! Deterministic order matching for Coinhub's exchange.
//!
//! One [`OrderBook`] per market keeps resting limit orders in price-time priority and turns
//! [`Command`]s into [`Event`]s. The crate is pure: no I/O, no clock, no randomness, no floats,
//! and no iteration over hash maps, so the same command sequence always yields the same events
//! and the same book, byte for byte (the service rebuilds books by replaying its command log).
//!
//! Units: prices are integer ticks, quantities integer lots. The caller converts to and from
//! base units (tick size, lot size) and refuses amounts that are not whole ticks or lots.
//!
//! Event protocol for one `Place` command:
//! - `Rejected` alone (nothing changed), or
//! - `Accepted`, then any `Trade`s (each followed by `Done` for a maker it filled completely, and
//!   preceded by `Cancelled { reason: SelfTrade }` for the taker's own resting orders it met),
//!   then exactly one of: `Done` (taker filled), `Cancelled` (rest of an IOC, FOK-less market or
//!   budget order dropped), or nothing (the rest of a GTC/post-only limit order now rests).

#![deny(missing_docs)]

mod book;

pub use book::{BookSnapshot, Depth, DepthLevel, LevelView, OrderBook, OrderView};

use serde::{Deserialize, Serialize};

/// Identifies an order. Unique among the live (resting) orders of a book; the service assigns
/// them, so uniqueness over all time is its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub u64);

/// Identifies the member (account holder) who owns an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub u64);

/// A market's matching parameters. Tick and lot sizes live with the caller; here every price
/// is a count of ticks and every quantity a count of lots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    /// Base asset symbol, e.g. `btc`.
    pub base: String,
    /// Quote asset symbol, e.g. `usdt`.
    pub quote: String,
    /// Smallest quantity, in lots, a limit or market order may have.
    pub min_order_lots: u64,
}

/// Which side of the book an order is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Buys base, pays quote.
    Buy,
    /// Sells base, receives quote.
    Sell,
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// Time in force of a limit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: what does not match rests on the book.
    Gtc,
    /// Immediate or cancel: match what is possible now, cancel the rest.
    Ioc,
    /// Fill or kill: match the whole quantity now or reject the order untouched.
    Fok,
    /// Rest only: rejected if it would match on arrival.
    PostOnly,
}

/// What kind of order to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderKind {
    /// Limit order: never trades at a price worse than `price_ticks`.
    Limit {
        /// Limit price in ticks.
        price_ticks: u64,
        /// Quantity in lots.
        quantity_lots: u64,
        /// Time in force.
        tif: TimeInForce,
    },
    /// Market order by quantity: takes the best prices until filled or the book is empty;
    /// the rest is cancelled, it never rests.
    Market {
        /// Quantity in lots.
        quantity_lots: u64,
    },
    /// Market buy spending at most a quote amount, in `price_ticks × lots` units; buys whole
    /// lots only, and the unspent amount is reported in the final `Cancelled` (or `Done` when it
    /// is exactly spent). Only valid with [`Side::Buy`].
    MarketBuyByQuote {
        /// Budget in `price_ticks × lots` units.
        quote_amount: u64,
    },
}

/// A command to a book. Commands are what the service persists and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Place a new order.
    Place {
        /// New order's id; must not belong to a live order.
        id: OrderId,
        /// Owner.
        member: MemberId,
        /// Buy or sell.
        side: Side,
        /// Limit, market or market-by-quote.
        kind: OrderKind,
    },
    /// Cancel a resting order of `member`.
    Cancel {
        /// Order to cancel.
        id: OrderId,
        /// Who asks; must own the order.
        member: MemberId,
    },
}

/// Why a command was refused. Nothing in the book changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// Quantity (or quote budget) is zero.
    #[error("quantity is zero")]
    ZeroQuantity,
    /// Limit price is zero ticks.
    #[error("price is zero")]
    ZeroPrice,
    /// Quantity is below the market's minimum.
    #[error("quantity {quantity_lots} lots is below the minimum of {min_order_lots} lots")]
    BelowMinimum {
        /// Quantity asked for.
        quantity_lots: u64,
        /// The market's minimum.
        min_order_lots: u64,
    },
    /// A live order already has this id.
    #[error("an open order already has this id")]
    DuplicateId,
    /// No live order has this id (never placed, or already filled or cancelled).
    #[error("no open order has this id")]
    UnknownOrder,
    /// The order belongs to another member.
    #[error("the order belongs to another member")]
    ForeignOrder,
    /// A post-only order would have matched on arrival.
    #[error("post-only order would cross the book at {best_opposite_price_ticks} ticks")]
    PostOnlyWouldCross {
        /// Best opposite price at the time.
        best_opposite_price_ticks: u64,
    },
    /// A fill-or-kill order could not be filled completely.
    #[error("fill-or-kill order fillable for only {fillable_lots} lots")]
    FokNotFillable {
        /// How much could have been filled (other members' orders only).
        fillable_lots: u64,
    },
    /// Buying by quote amount is only defined for buys.
    #[error("market order by quote amount must be a buy")]
    SellByQuote,
}

/// Why an order left the book without being filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelReason {
    /// Its owner cancelled it.
    Requested,
    /// A taker of the same member met it (self-trade prevention cancels the resting order).
    SelfTrade,
    /// The unfilled rest of an IOC, market or by-quote order (these never rest).
    Unfilled,
}

/// What was left of an order when it was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Remaining {
    /// Lots not filled (limit and market orders).
    Lots(u64),
    /// Budget not spent, in `price_ticks × lots` units (market buy by quote).
    QuoteAmount(u64),
}

/// Output of the book, in the order things happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// The order passed validation; matching follows.
    Accepted {
        /// The order.
        id: OrderId,
    },
    /// The command was refused; nothing changed.
    Rejected {
        /// The order the command named.
        id: OrderId,
        /// Why.
        reason: RejectReason,
    },
    /// A taker matched a resting (maker) order.
    Trade {
        /// Resting order.
        maker_id: OrderId,
        /// Incoming order.
        taker_id: OrderId,
        /// Owner of the resting order.
        maker_member: MemberId,
        /// Owner of the incoming order.
        taker_member: MemberId,
        /// Side of the incoming order.
        taker_side: Side,
        /// Always the maker's price.
        price_ticks: u64,
        /// Quantity traded.
        quantity_lots: u64,
    },
    /// The order left the book (or never rested) with something unfilled.
    Cancelled {
        /// The order.
        id: OrderId,
        /// What was left.
        remaining: Remaining,
        /// Why.
        reason: CancelReason,
    },
    /// The order was filled completely (or its budget spent exactly).
    Done {
        /// The order.
        id: OrderId,
    },
}
