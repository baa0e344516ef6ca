//! What a settled batch did, as stored in its `trading_event_batches.outcome` row: the source
//! of its `exchange.events` messages (`events.rs`) and of its `orders` and `trades` rows
//! (`projection.rs`).
//!
//! Stored form 3 (migration 0020, [`BatchOutcome`], written since): amounts as integers of
//! base units, times as microseconds since the Unix epoch (UTC), enums by variant, the
//! market's base and quote asset once per batch (an order holds base if it sells, quote if it
//! buys; fees are in quote). Forms 1 (0013) and 2 (0014) held orders as [`OrderView`]s, with
//! every amount and time as text: encoding a batch formatted ~10 strings an order, and
//! projecting it parsed them back. Rows of those forms are still read ([`decode`] converts
//! them), never written.
//!
//! `postcard` stores fields by position and enum variants (`Side`, `OrderKind`,
//! `TimeInForce`, [`OrderStatus`]) by index, not by name: stored rows must stay readable, so a
//! change to one of these shapes needs a new form (`outcome_form_3_is_stable` holds the
//! bytes of a known batch).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::store::{OrderRow, TradeRow};
use super::{MemberId, OrderKind, OrderView, Side, TimeInForce};
use crate::markets::Market;

/// The stored form [`encode`] writes, the `form` column's value.
pub(crate) const OUTCOME_FORM: i16 = 3;

/// What a settled batch did (stored form 3). `M` is how members are held: [`MemberId`] when
/// encoding (shared text), `String` once decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchOutcome<M = String> {
    /// When the batch ran (its trades' time), microseconds since the Unix epoch.
    pub(crate) occurred_at: i64,
    /// Its `trade_settlement` ledger transfer; `None` when it netted to zero.
    pub(crate) transfer_id: Option<Uuid>,
    /// The market's base asset symbol (empty in a converted form-1/2 row without sells).
    pub(crate) base: String,
    /// The market's quote asset symbol, the asset of every fee (empty in a converted
    /// form-1/2 row without buys or trades).
    pub(crate) quote: String,
    /// Its trades, in trade order.
    pub(crate) trades: Vec<OutcomeTrade<M>>,
    /// The final state of every order it changed, by order id.
    pub(crate) orders: Vec<OutcomeOrder<M>>,
}

/// A settled trade: amounts in base units (`price` in quote base units per lot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutcomeTrade<M = String> {
    pub(crate) trade_id: u64,
    /// The command that made it (`trades.seq`) and its place among that command's trades
    /// (`trades.ordinal`, from 1; 0 in a converted form-1 row).
    pub(crate) command_seq: u64,
    pub(crate) ordinal: u32,
    pub(crate) price: u128,
    pub(crate) quantity: u128,
    pub(crate) quote_quantity: u128,
    pub(crate) maker_order_id: u64,
    pub(crate) taker_order_id: u64,
    pub(crate) maker_member: M,
    pub(crate) taker_member: M,
    pub(crate) taker_side: Side,
    pub(crate) maker_fee: u128,
    pub(crate) taker_fee: u128,
}

/// An order's state at the end of the batch: its member, the command that placed it
/// (`orders.seq`; 0 in a converted form-1 row) and its figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutcomeOrder<M = String> {
    pub(crate) member: M,
    pub(crate) seq: u64,
    pub(crate) order: OrderUnits,
}

/// An order in base units, as [`OrderView`] shows it without the text: `price` in quote base
/// units per lot, `quantity` and `filled` in base units of the base asset, `quote_amount`
/// and `filled_quote` of the quote asset, `hold` of the asset it holds (base for a sell,
/// quote for a buy); times in microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderUnits {
    pub(crate) id: u64,
    pub(crate) side: Side,
    pub(crate) kind: OrderKind,
    pub(crate) price: Option<u128>,
    pub(crate) quantity: Option<u128>,
    pub(crate) quote_amount: Option<u128>,
    pub(crate) time_in_force: Option<TimeInForce>,
    pub(crate) client_order_id: Option<String>,
    pub(crate) filled: u128,
    pub(crate) filled_quote: u128,
    pub(crate) hold: u128,
    pub(crate) status: OrderStatus,
    pub(crate) reason: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// An order's status (`orders.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OrderStatus {
    Open,
    Filled,
    Cancelled,
    Rejected,
}

impl OrderStatus {
    /// The status as `orders.status` and the API write it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Filled => "filled",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }

    /// Errors: a text naming `status` when it is none of the four.
    fn parse(status: &str) -> Result<Self, String> {
        match status {
            "open" => Ok(Self::Open),
            "filled" => Ok(Self::Filled),
            "cancelled" => Ok(Self::Cancelled),
            "rejected" => Ok(Self::Rejected),
            other => Err(format!("unknown order status {other:?}")),
        }
    }
}

impl OrderUnits {
    /// `row`'s figures in `market`'s base units.
    pub(crate) fn of(row: &OrderRow, market: &Market) -> Self {
        Self {
            id: row.id,
            side: row.side,
            kind: row.kind,
            price: row.price_ticks.map(|ticks| market.price_units(ticks)),
            quantity: row.quantity_lots.map(|lots| market.base_units(lots)),
            quote_amount: row
                .quote_budget
                .map(|budget| u128::from(budget) * market.tick_size),
            time_in_force: row.time_in_force,
            client_order_id: row.client_order_id.clone(),
            filled: market.base_units(row.filled_lots),
            filled_quote: row.filled_quote,
            hold: row.hold,
            status: OrderStatus::parse(row.status).expect("the engine's statuses are the four"),
            reason: row.reason.clone(),
            created_at: unix_micros(row.created_at),
            updated_at: unix_micros(row.updated_at),
        }
    }

    /// The order as members see it, in `market` (`base` and `quote` its assets).
    pub(crate) fn view(&self, market: &str, base: &str, quote: &str) -> OrderView {
        // Most views are of orders the batch placed: one time, formatted once.
        let created_at = rfc3339_of_micros(self.created_at);
        let updated_at = if self.updated_at == self.created_at {
            created_at.clone()
        } else {
            rfc3339_of_micros(self.updated_at)
        };
        OrderView {
            id: self.id,
            market: market.to_owned(),
            side: self.side,
            kind: self.kind,
            price: self.price.map(|v| v.to_string()),
            quantity: self.quantity.map(|v| v.to_string()),
            quote_amount: self.quote_amount.map(|v| v.to_string()),
            filled: self.filled.to_string(),
            filled_quote: self.filled_quote.to_string(),
            status: self.status.as_str().to_owned(),
            reason: self.reason.clone(),
            time_in_force: self.time_in_force,
            client_order_id: self.client_order_id.clone(),
            hold: self.hold.to_string(),
            hold_asset: self.hold_asset(base, quote).to_owned(),
            created_at,
            updated_at,
        }
    }

    /// The asset `hold` is in: `base` for a sell, `quote` for a buy.
    pub(crate) fn hold_asset<'a>(&self, base: &'a str, quote: &'a str) -> &'a str {
        match self.side {
            Side::Sell => base,
            Side::Buy => quote,
        }
    }
}

/// `at` in microseconds since the Unix epoch (the engine's times are whole microseconds).
pub(crate) fn unix_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).expect("a time of this era fits i64 µs")
}

/// The time `micros` microseconds after the Unix epoch, UTC.
pub(crate) fn time_of_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .expect("a stored time is within the calendar")
}

/// `micros` since the Unix epoch in RFC 3339, UTC, as the engine's answers write times.
pub(crate) fn rfc3339_of_micros(micros: i64) -> String {
    time_of_micros(micros)
        .format(&Rfc3339)
        .expect("a UTC time formats")
}

/// A settled batch's outcome in stored form 3: `trades` (in trade order), then the final
/// state of each of `orders` (by id). Returns the bytes and the number of `exchange.events`
/// messages it stands for (one a trade, one an order; 0: nothing to store).
pub(crate) fn encode<'a>(
    market: &Market,
    trades: &[TradeRow],
    orders: impl IntoIterator<Item = &'a OrderRow>,
    occurred_at: OffsetDateTime,
    transfer_id: Option<Uuid>,
) -> (Vec<u8>, usize) {
    let outcome: BatchOutcome<MemberId> = BatchOutcome {
        occurred_at: unix_micros(occurred_at),
        transfer_id,
        base: market.base.to_string(),
        quote: market.quote.to_string(),
        trades: trades
            .iter()
            .map(|trade| OutcomeTrade {
                trade_id: trade.id,
                command_seq: trade.seq,
                ordinal: trade.ordinal,
                price: trade.price,
                quantity: trade.quantity,
                quote_quantity: trade.quote_quantity,
                maker_order_id: trade.maker_order_id,
                taker_order_id: trade.taker_order_id,
                maker_member: trade.maker_member.clone(),
                taker_member: trade.taker_member.clone(),
                taker_side: trade.taker_side,
                maker_fee: trade.maker_fee,
                taker_fee: trade.taker_fee,
            })
            .collect(),
        orders: orders
            .into_iter()
            .map(|row| OutcomeOrder {
                member: row.member.clone(),
                seq: row.seq,
                order: OrderUnits::of(row, market),
            })
            .collect(),
    };
    let count = outcome.trades.len() + outcome.orders.len();
    // Plain structs of integers and strings always encode.
    let bytes = postcard::to_allocvec(&outcome).expect("a batch outcome encodes");
    (bytes, count)
}

/// Decodes a stored `outcome` of `form` 1, 2 or 3.
///
/// Errors: a text naming the form and what did not decode or convert.
pub(crate) fn decode(form: i16, outcome: &[u8]) -> Result<BatchOutcome, String> {
    match form {
        1 => postcard::from_bytes::<legacy::StoredBatch>(outcome)
            .map_err(|e| format!("stored form 1 does not decode: {e}"))
            .map(legacy::Form2::from)
            .and_then(legacy::Form2::convert)
            .map_err(|e| format!("stored form 1: {e}")),
        2 => postcard::from_bytes::<legacy::Form2>(outcome)
            .map_err(|e| format!("stored form 2 does not decode: {e}"))
            .and_then(legacy::Form2::convert)
            .map_err(|e| format!("stored form 2: {e}")),
        OUTCOME_FORM => postcard::from_bytes(outcome)
            .map_err(|e| format!("stored form {OUTCOME_FORM} does not decode: {e}")),
        other => Err(format!("unknown stored form {other}")),
    }
}

/// Forms 1 and 2, read and converted to form 3.
mod legacy {
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    use super::{BatchOutcome, OrderStatus, OrderUnits, OutcomeOrder, OutcomeTrade};
    use crate::trading::copy_binary::unix_micros_of_rfc3339;
    use crate::trading::{OrderView, Side};

    /// A trade of forms 1 and 2: amounts in base units, with its market and fee asset.
    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) struct StoredTrade {
        pub(crate) trade_id: u64,
        pub(crate) market: String,
        pub(crate) price: u128,
        pub(crate) quantity: u128,
        pub(crate) quote_quantity: u128,
        pub(crate) maker_order_id: u64,
        pub(crate) taker_order_id: u64,
        pub(crate) maker_member: String,
        pub(crate) taker_member: String,
        pub(crate) taker_side: Side,
        pub(crate) maker_fee: u128,
        pub(crate) taker_fee: u128,
        pub(crate) fee_asset: String,
        pub(crate) command_seq: u64,
    }

    /// Form 1 (migration 0013): a batch's messages only, its time (RFC 3339), its trades and
    /// its order updates as (member, order).
    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) struct StoredBatch {
        pub(crate) occurred_at: String,
        pub(crate) trades: Vec<StoredTrade>,
        pub(crate) orders: Vec<(String, OrderView)>,
    }

    /// Form 2 (migration 0014): form 1 with the batch's ledger transfer, each trade's
    /// ordinal and each order's placing command.
    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) struct Form2 {
        pub(crate) occurred_at: String,
        pub(crate) transfer_id: Option<Uuid>,
        pub(crate) trades: Vec<(u32, StoredTrade)>,
        pub(crate) orders: Vec<(String, u64, OrderView)>,
    }

    impl From<StoredBatch> for Form2 {
        /// A form-1 row, for its messages: it is never projected, so what only the
        /// projection needs is left at zero.
        fn from(batch: StoredBatch) -> Self {
            Self {
                occurred_at: batch.occurred_at,
                transfer_id: None,
                trades: batch.trades.into_iter().map(|t| (0, t)).collect(),
                orders: batch
                    .orders
                    .into_iter()
                    .map(|(member, order)| (member, 0, order))
                    .collect(),
            }
        }
    }

    fn amount(field: &str, text: &str) -> Result<u128, String> {
        text.parse()
            .map_err(|_| format!("{field} {text:?} is not an amount of base units"))
    }

    fn optional(field: &str, text: Option<&String>) -> Result<Option<u128>, String> {
        text.map(|t| amount(field, t)).transpose()
    }

    impl Form2 {
        /// The same outcome in form 3. The market's assets come from its orders (a sell
        /// holds base, a buy quote) and trades (fees are in quote).
        ///
        /// Errors: an amount or time in the row that does not parse, an unknown status.
        pub(crate) fn convert(self) -> Result<BatchOutcome, String> {
            let (mut base, mut quote) = (String::new(), String::new());
            for (_, _, order) in &self.orders {
                let asset = match order.side {
                    Side::Sell => &mut base,
                    Side::Buy => &mut quote,
                };
                if asset.is_empty() {
                    asset.clone_from(&order.hold_asset);
                }
            }
            if let Some((_, trade)) = self.trades.first() {
                quote.clone_from(&trade.fee_asset);
            }
            let orders = self
                .orders
                .into_iter()
                .map(|(member, seq, o)| {
                    let order = OrderUnits {
                        id: o.id,
                        side: o.side,
                        kind: o.kind,
                        price: optional("price", o.price.as_ref())?,
                        quantity: optional("quantity", o.quantity.as_ref())?,
                        quote_amount: optional("quote_amount", o.quote_amount.as_ref())?,
                        time_in_force: o.time_in_force,
                        client_order_id: o.client_order_id,
                        filled: amount("filled", &o.filled)?,
                        filled_quote: amount("filled_quote", &o.filled_quote)?,
                        hold: amount("hold", &o.hold)?,
                        status: OrderStatus::parse(&o.status)?,
                        reason: o.reason,
                        created_at: unix_micros_of_rfc3339(&o.created_at)?,
                        updated_at: unix_micros_of_rfc3339(&o.updated_at)?,
                    };
                    Ok(OutcomeOrder { member, seq, order })
                })
                .collect::<Result<_, String>>()?;
            let trades = self
                .trades
                .into_iter()
                .map(|(ordinal, t)| OutcomeTrade {
                    trade_id: t.trade_id,
                    command_seq: t.command_seq,
                    ordinal,
                    price: t.price,
                    quantity: t.quantity,
                    quote_quantity: t.quote_quantity,
                    maker_order_id: t.maker_order_id,
                    taker_order_id: t.taker_order_id,
                    maker_member: t.maker_member,
                    taker_member: t.taker_member,
                    taker_side: t.taker_side,
                    maker_fee: t.maker_fee,
                    taker_fee: t.taker_fee,
                })
                .collect();
            Ok(BatchOutcome {
                occurred_at: unix_micros_of_rfc3339(&self.occurred_at)?,
                transfer_id: self.transfer_id,
                base,
                quote,
                trades,
                orders,
            })
        }
    }
}

/// A sample order state, for tests: alice's sell of 5,000 base units at 100,000 a lot, 3,000
/// of it filled, placed by command 1 (the golden samples of the stored forms hold it).
#[cfg(test)]
pub(crate) fn sample_order() -> OutcomeOrder {
    OutcomeOrder {
        member: "alice".into(),
        seq: 1,
        order: OrderUnits {
            id: 1,
            side: Side::Sell,
            kind: OrderKind::Limit,
            price: Some(100_000),
            quantity: Some(5_000),
            quote_amount: None,
            time_in_force: Some(TimeInForce::Gtc),
            client_order_id: Some("c-1".into()),
            filled: 3_000,
            filled_quote: 300_000,
            hold: 2_000,
            status: OrderStatus::Open,
            reason: None,
            created_at: 1_796_612_399_000_000,
            updated_at: 1_796_612_400_000_001,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::legacy::{Form2, StoredBatch, StoredTrade};
    use super::{BatchOutcome, OUTCOME_FORM, OutcomeTrade, decode};
    use crate::trading::{OrderKind, OrderView, Side, TimeInForce};

    /// A form-1 batch of one trade and one order update, every field set.
    fn form_1() -> StoredBatch {
        StoredBatch {
            occurred_at: "2026-12-07T03:00:00.000001Z".into(),
            trades: vec![StoredTrade {
                trade_id: 7,
                market: "btc_usdt".into(),
                price: 100_000,
                quantity: 3_000,
                quote_quantity: 300_000,
                maker_order_id: 1,
                taker_order_id: 2,
                maker_member: "alice".into(),
                taker_member: "bob".into(),
                taker_side: Side::Buy,
                maker_fee: 300,
                taker_fee: 600,
                fee_asset: "USDT".into(),
                command_seq: 2,
            }],
            orders: vec![("alice".into(), view())],
        }
    }

    /// The sample's order as the engine answered it.
    fn view() -> OrderView {
        OrderView {
            id: 1,
            market: "btc_usdt".into(),
            side: Side::Sell,
            kind: OrderKind::Limit,
            price: Some("100000".into()),
            quantity: Some("5000".into()),
            quote_amount: None,
            filled: "3000".into(),
            filled_quote: "300000".into(),
            status: "open".into(),
            reason: None,
            time_in_force: Some(TimeInForce::Gtc),
            client_order_id: Some("c-1".into()),
            hold: "2000".into(),
            hold_asset: "BTC".into(),
            created_at: "2026-12-07T02:59:59Z".into(),
            updated_at: "2026-12-07T03:00:00.000001Z".into(),
        }
    }

    /// The sample with what form 2 added: a transfer id, an ordinal, the placing command.
    fn form_2() -> Form2 {
        let mut outcome = Form2::from(form_1());
        outcome.transfer_id = Some(transfer_id());
        outcome.trades[0].0 = 3;
        outcome.orders[0].1 = 1;
        outcome
    }

    fn transfer_id() -> uuid::Uuid {
        uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
    }

    /// The sample in form 3.
    fn form_3() -> BatchOutcome {
        BatchOutcome {
            occurred_at: 1_796_612_400_000_001,
            transfer_id: Some(transfer_id()),
            base: "BTC".into(),
            quote: "USDT".into(),
            trades: vec![OutcomeTrade {
                trade_id: 7,
                command_seq: 2,
                ordinal: 3,
                price: 100_000,
                quantity: 3_000,
                quote_quantity: 300_000,
                maker_order_id: 1,
                taker_order_id: 2,
                maker_member: "alice".into(),
                taker_member: "bob".into(),
                taker_side: Side::Buy,
                maker_fee: 300,
                taker_fee: 600,
            }],
            orders: vec![super::sample_order()],
        }
    }

    /// Stored rows must stay readable: the stored bytes of a known batch in each form are
    /// these (a change of field order, type or enum variants changes them and fails here).
    #[test]
    fn stored_forms_are_stable() {
        let bytes = postcard::to_allocvec(&form_1()).expect("encodes");
        assert_eq!(hex::encode(&bytes), GOLDEN_FORM_1);
        let bytes = postcard::to_allocvec(&form_2()).expect("encodes");
        assert_eq!(hex::encode(&bytes), GOLDEN_FORM_2);
        let bytes = postcard::to_allocvec(&form_3()).expect("encodes");
        assert_eq!(hex::encode(&bytes), GOLDEN_FORM_3);
        assert_eq!(decode(OUTCOME_FORM, &bytes), Ok(form_3()));
        assert!(decode(4, &bytes).is_err(), "an unknown form is refused");
    }

    /// Rows of forms 1 and 2 decode to the same outcome in form 3 (form 1 with the
    /// projection's fields at zero), and the order renders as the engine answered it.
    #[test]
    fn earlier_forms_convert_to_form_3() {
        let bytes = hex::decode(GOLDEN_FORM_2).expect("hex");
        let converted = decode(2, &bytes).expect("form 2 decodes");
        assert_eq!(converted, form_3());
        let order = &converted.orders[0].order;
        assert_eq!(order.view("btc_usdt", "BTC", "USDT"), view());

        let bytes = hex::decode(GOLDEN_FORM_1).expect("hex");
        let mut expected = form_3();
        expected.transfer_id = None;
        expected.trades[0].ordinal = 0;
        expected.orders[0].seq = 0;
        assert_eq!(decode(1, &bytes), Ok(expected));

        let mut bad = form_2();
        bad.orders[0].2.filled = "3e3".into();
        let bytes = postcard::to_allocvec(&bad).expect("encodes");
        let error = decode(2, &bytes).expect_err("a malformed amount is refused");
        assert!(error.contains("filled") && error.contains("3e3"), "{error}");
    }

    const GOLDEN_FORM_1: &str = concat!(
        "1b323032362d31322d30375430333a30303a30302e3030303030315a0107086274635f75736474a0",
        "8d06b817e0a712010205616c69636503626f6200ac02d8040455534454020105616c696365010862",
        "74635f757364740100010631303030303001043530303000043330303006333030303030046f7065",
        "6e0001000103632d3104323030300342544314323032362d31322d30375430323a35393a35395a1b",
        "323032362d31322d30375430333a30303a30302e3030303030315a",
    );

    const GOLDEN_FORM_2: &str = concat!(
        "1b323032362d31322d30375430333a30303a30302e3030303030315a01100123456789abcdef0123",
        "456789abcdef010307086274635f75736474a08d06b817e0a712010205616c69636503626f6200ac",
        "02d8040455534454020105616c6963650101086274635f757364740100010631303030303001043530",
        "303000043330303006333030303030046f70656e0001000103632d3104323030300342544314323032",
        "362d31322d30375430323a35393a35395a1b323032362d31322d30375430333a30303a30302e303030",
        "3030315a",
    );

    const GOLDEN_FORM_3: &str = concat!(
        "82b0b5becd80b10601100123456789abcdef0123456789abcdef03425443045553445401070203a0",
        "8d06b817e0a712010205616c69636503626f6200ac02d8040105616c6963650101010001a08d0601",
        "88270001000103632d31b817e0a712d00f000080a7bbbdcd80b10682b0b5becd80b106",
    );
}
