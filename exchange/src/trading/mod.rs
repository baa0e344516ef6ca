//! Trading: one deterministic order book ([`coinhub_matcher::OrderBook`]) per configured
//! market, settled in the ledger.
//!
//! [`TradingEngine`] is the service interface the HTTP API calls. Per market one task owns
//! the book and runs commands in arrival order; it takes whatever commands are waiting (up
//! to a bound) and settles them in **one** database transaction: the commands
//! (`trading_command_batches`, numbered per market), one netted ledger transfer
//! (`trade_settlement`) and the batch's outcome (`trading_event_batches`: its trades and the
//! orders' new states, from which the relay publishes `exchange.events` and [`projection`]
//! writes the read models `orders` and `trades` after the commit; readers of those catch up
//! first). Nothing is acknowledged or published before that commit; if it fails, the book is
//! rebuilt from the committed command log and the batch's callers get an error. At start the
//! books are rebuilt from their newest snapshot and the command log after it.
//!
//! Units (see [`crate::markets`]): `price` is quote base units per lot and a multiple of
//! `tick_size`; `quantity` is base units and a multiple of `lot_size`; `quote_amount` is
//! quote base units and a multiple of `tick_size`. All are decimal integer strings.
//!
//! Funds and fees:
//! - a sell locks its quantity of base (`available → locked`);
//! - a limit buy locks `price × lots + floor(price × lots × max(maker, taker) bps / 10⁴)`
//!   quote; a market buy by quote locks `quote_amount` plus the taker fee on it; a market
//!   buy by quantity locks the worst case from the current book (the cost of the first
//!   `quantity + own resting asks` lots plus the taker fee);
//! - fees are paid in the **quote** asset by both sides, rounded down: the buyer pays
//!   `notional + fee`, the seller receives `notional − fee`; both fees go to the platform's
//!   `fee_revenue` account for the quote asset;
//! - an order that is filled, cancelled or expires releases what is left of its hold.
//!
//! Invariant (checked in tests): a member's `locked` balance of an asset equals the sum of
//! the holds of their open orders in that asset (plus pending withdrawals).

mod accounts;
mod copy_binary;
mod engine;
pub mod events;
mod funds;
mod outcome;
pub mod projection;
pub mod snapshot;
pub mod status;
mod store;

use serde::{Deserialize, Serialize};

pub use coinhub_events::MemberId;

use crate::markets::ConvertError;
pub use crate::markets::MarketsConfig;

/// The AMQP topic exchange that carries trades and order updates (declared by the relay).
pub const EXCHANGE_EVENTS: &str = "exchange.events";

/// Declares [`EXCHANGE_EVENTS`] (topic, durable). Idempotent. Its messages are published
/// without AMQP `mandatory`: they are informational, and an exchange nobody listens to yet
/// must not hold up the outbox.
///
/// Errors: the broker's, e.g. the exchange exists with another type.
pub async fn declare_exchange(channel: &lapin::Channel) -> Result<(), lapin::Error> {
    let durable = lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..lapin::options::ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE_EVENTS.into(),
            lapin::ExchangeKind::Topic,
            durable,
            lapin::types::FieldTable::default(),
        )
        .await
}

/// Routing keys on [`EXCHANGE_EVENTS`].
pub mod routing {
    /// A trade was settled.
    pub const TRADE_EXECUTED: &str = "trade.executed";
    /// An order changed (accepted, partly filled, filled, cancelled, rejected).
    pub const ORDER_UPDATED: &str = "order.updated";
}

/// Where the engine's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsSink {
    /// Each settled batch's outcome row (`trading_event_batches`) is published to
    /// [`EXCHANGE_EVENTS`] by the relay.
    Outbox,
    /// Nothing published (benchmarks): the outcome row is still written, marked published,
    /// because `orders` and `trades` are projected from it.
    Disabled,
}

/// Side of an order, `"buy"` or `"sell"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buys base with quote.
    Buy,
    /// Sells base for quote.
    Sell,
}

impl Side {
    /// `"buy"` or `"sell"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// Kind of order, `"limit"` or `"market"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// Trades at `price` or better.
    Limit,
    /// Takes the best prices; never rests.
    Market,
}

impl OrderKind {
    /// `"limit"` or `"market"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Market => "market",
        }
    }
}

/// Time in force of a limit order: `"gtc"` (default), `"ioc"`, `"fok"`, `"post_only"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancelled.
    #[default]
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
    /// Rejected if it would trade on arrival.
    PostOnly,
}

impl TimeInForce {
    /// `"gtc"`, `"ioc"`, `"fok"` or `"post_only"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gtc => "gtc",
            Self::Ioc => "ioc",
            Self::Fok => "fok",
            Self::PostOnly => "post_only",
        }
    }
}

/// A new order as a member sends it.
///
/// - limit: `price` and `quantity` required, `quote_amount` refused;
/// - market sell: `quantity`;
/// - market buy: exactly one of `quantity` or `quote_amount`;
/// - `time_in_force` only for limit orders (default `gtc`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Market name, e.g. `btc_usdt`.
    pub market: String,
    /// `"buy"` or `"sell"`.
    pub side: Side,
    /// `"limit"` or `"market"`.
    pub kind: OrderKind,
    /// Quote base units per lot, a multiple of the market's `tick_size`.
    #[serde(default)]
    pub price: Option<String>,
    /// Base units, a multiple of the market's `lot_size`.
    #[serde(default)]
    pub quantity: Option<String>,
    /// Market buy only: quote base units to spend (fee on top), a multiple of `tick_size`.
    #[serde(default)]
    pub quote_amount: Option<String>,
    /// Limit orders only; default `gtc`.
    #[serde(default)]
    pub time_in_force: Option<TimeInForce>,
    /// The member's own label, 1-64 printable ASCII; echoed back.
    #[serde(default)]
    pub client_order_id: Option<String>,
}

/// An order's state as members see it. Amounts are decimal strings of base units.
///
/// Also part of the stored form of `order.updated` messages (`events.rs`, by field position):
/// changing its fields needs a new stored form there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Order id (unique across markets).
    pub id: u64,
    /// Market name.
    pub market: String,
    /// `"buy"` / `"sell"`.
    pub side: Side,
    /// `"limit"` / `"market"`.
    pub kind: OrderKind,
    /// Limit price (quote base units per lot); `None` for market orders.
    pub price: Option<String>,
    /// Quantity asked (base units); `None` for a market buy by quote.
    pub quantity: Option<String>,
    /// Quote budget of a market buy by quote.
    pub quote_amount: Option<String>,
    /// Base units filled so far.
    pub filled: String,
    /// Quote base units exchanged so far (without fees).
    pub filled_quote: String,
    /// `"open"` (resting, maybe partly filled), `"filled"`, `"cancelled"`, `"rejected"`.
    pub status: String,
    /// Why it was cancelled (`"requested"`, `"self_trade"`, `"unfilled"`) or rejected.
    pub reason: Option<String>,
    /// Limit orders' time in force.
    pub time_in_force: Option<TimeInForce>,
    /// The member's label.
    pub client_order_id: Option<String>,
    /// Funds still locked for this order (in `hold_asset` base units).
    pub hold: String,
    /// The asset of `hold`.
    pub hold_asset: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// One trade from a member's point of view. Amounts are decimal strings of base units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeView {
    /// Trade id (unique across markets).
    pub id: u64,
    /// Market name.
    pub market: String,
    /// Quote base units per lot.
    pub price: String,
    /// Base units.
    pub quantity: String,
    /// Quote base units exchanged (price × lots), without fees.
    pub quote_quantity: String,
    /// The resting order.
    pub maker_order_id: u64,
    /// The incoming order.
    pub taker_order_id: u64,
    /// The taker's side.
    pub side: Side,
    /// This member's fee.
    pub fee: String,
    /// Asset of `fee` (the market's quote asset).
    pub fee_asset: String,
    /// `"maker"` or `"taker"`: this member's role.
    pub liquidity: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Aggregated book levels, best first: `(price, quantity)` as decimal strings of base units
/// (price in quote base units per lot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthView {
    /// Market name.
    pub market: String,
    /// Bids, highest first.
    pub bids: Vec<(String, String)>,
    /// Asks, lowest first.
    pub asks: Vec<(String, String)>,
}

/// A configured market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketView {
    /// Name, e.g. `btc_usdt`.
    pub name: String,
    /// Base asset.
    pub base: String,
    /// Quote asset.
    pub quote: String,
    /// Quote base units per lot per tick.
    pub tick_size: String,
    /// Base units per lot.
    pub lot_size: String,
    /// Smallest order, base units.
    pub min_quantity: String,
    /// Maker fee, basis points.
    pub maker_fee_bps: u32,
    /// Taker fee, basis points.
    pub taker_fee_bps: u32,
}

/// Why a trading call failed. Client errors leave nothing locked and nothing changed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TradingError {
    /// No such market.
    #[error("unknown market {0:?}")]
    UnknownMarket(String),
    /// A missing, malformed, zero or contradictory amount or field.
    #[error("invalid order: {0}")]
    InvalidQuantity(String),
    /// The price is not a whole number of ticks.
    #[error("price {price} is not a multiple of the tick size {tick_size}")]
    PriceOffTick {
        /// Price given.
        price: String,
        /// The market's tick size.
        tick_size: String,
    },
    /// The quantity is not a whole number of lots.
    #[error("{field} {quantity} is not a multiple of {step}")]
    QuantityOffLot {
        /// `quantity` or `quote_amount`.
        field: String,
        /// Value given.
        quantity: String,
        /// The market's lot size (or tick size for `quote_amount`).
        step: String,
    },
    /// The quantity is below the market's minimum.
    #[error("quantity {quantity} is below the minimum {min_quantity}")]
    BelowMinimum {
        /// Quantity given.
        quantity: String,
        /// The market's minimum.
        min_quantity: String,
    },
    /// The member's available balance cannot cover the order's hold.
    #[error("insufficient funds: {asset} needed {needed}, available {available}")]
    InsufficientFunds {
        /// Asset.
        asset: String,
        /// Hold the order needs, base units.
        needed: String,
        /// Available balance, base units.
        available: String,
    },
    /// No open order with this id in this market.
    #[error("no open order {0} in this market")]
    UnknownOrder(u64),
    /// The order belongs to another member.
    #[error("order {0} belongs to another member")]
    ForeignOrder(u64),
    /// The matcher refused the order (post-only would cross, fill-or-kill not fillable).
    #[error("order rejected: {reason}")]
    Rejected {
        /// Machine-readable reason, e.g. `post_only_would_cross`.
        reason: String,
        /// The order as recorded (status `rejected`).
        order: Box<OrderView>,
    },
    /// The engine is stopping or the market's task is gone; retry later.
    #[error("trading is unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL failed; nothing was applied.
    #[error("database: {0}")]
    Database(String),
    /// The batch's transaction lost to a concurrent one (deadlock, serialization failure, or
    /// another writer lowered a balance the batch relied on); nothing was applied. The engine
    /// runs such a batch again; callers see [`Self::Unavailable`] if it keeps losing.
    #[error("conflict with a concurrent transaction: {0}")]
    Conflict(String),
}

impl TradingError {
    /// Machine-readable code for API bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownMarket(_) => "unknown_market",
            Self::InvalidQuantity(_) => "invalid_quantity",
            Self::PriceOffTick { .. } => "price_off_tick",
            Self::QuantityOffLot { .. } => "quantity_off_lot",
            Self::BelowMinimum { .. } => "below_minimum",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::UnknownOrder(_) => "unknown_order",
            Self::ForeignOrder(_) => "foreign_order",
            Self::Rejected { .. } => "rejected",
            Self::Unavailable(_) => "unavailable",
            Self::Database(_) => "internal",
            Self::Conflict(_) => "conflict",
        }
    }

    /// Whether the caller's input caused it (HTTP 4xx) rather than the service (5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Self::Unavailable(_) | Self::Database(_) | Self::Conflict(_)
        )
    }

    pub(crate) fn from_convert(error: ConvertError, tick_size: u128, lot_size: u128) -> Self {
        match error {
            ConvertError::OffStep {
                field: "price",
                value,
                ..
            } => Self::PriceOffTick {
                price: value.to_string(),
                tick_size: tick_size.to_string(),
            },
            ConvertError::OffStep { field, value, step } => Self::QuantityOffLot {
                field: field.to_owned(),
                quantity: value.to_string(),
                step: if field == "quantity" {
                    lot_size.to_string()
                } else {
                    step.to_string()
                },
            },
            other => Self::InvalidQuantity(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for TradingError {
    /// Deadlocks (`40P01`) and serialization failures (`40001`) become [`Self::Conflict`].
    fn from(error: sqlx::Error) -> Self {
        let code = error
            .as_database_error()
            .and_then(|e| e.code().map(|code| code.into_owned()));
        match code.as_deref() {
            Some("40P01" | "40001") => Self::Conflict(error.to_string()),
            _ => Self::Database(error.to_string()),
        }
    }
}

pub use engine::{BookRebuild, EngineOptions, TradingEngine};
