//! The `exchange.events` messages of a settled batch: stored compactly in one
//! `trading_event_batches` row in the batch's transaction (`encode`), and rendered to JSON and
//! published from there by the relay ([`publish_next_batch`]), one AMQP message per event.
//!
//! Messages (JSON, `version: 1`, each with its own `id` = AMQP `message_id`, and
//! `occurred_at`, RFC 3339):
//! - [`routing::TRADE_EXECUTED`]: `trade_id`, `market`, `price` (quote base units per lot),
//!   `quantity` (base units), `quote_quantity` (quote base units), `maker_order_id`,
//!   `taker_order_id`, `maker_member`, `taker_member`, `taker_side`, `maker_fee`, `taker_fee`
//!   (base units of `fee_asset`), `fee_asset`, `command_seq`;
//! - [`routing::ORDER_UPDATED`]: `member` and `order` (an [`OrderView`]), the order's state at
//!   the end of the batch.
//!
//! Stored form (`outcome` column): the batch's outcome without JSON, `postcard`-encoded
//! (~150 bytes a trade and its two order updates instead of ~2 KB of JSON, and no JSON
//! formatting while the batch is settled). Since migration 0014 (`form` 2, `BatchOutcome`)
//! it also holds what the read models need, and is the source the projector writes `orders`
//! and `trades` from (`projection.rs`); such a row is written for every batch that traded or
//! changed an order, already marked published when no events go out. Form 1 (0013,
//! `StoredBatch`) holds the messages only. A message's id is derived, not stored: UUID v5 of
//! `{market}/{first_seq}/{index}` in [`EVENTS_ID_NAMESPACE`], so a message published again
//! after a crash keeps its id. Rows written before 0013 keep their `events` text (one message
//! per line, `routing key TAB message id TAB JSON body`) and are published from it.

use std::time::Duration;

use coinhub_events::outbox::OutboxError;
use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::store::{OrderRow, TradeRow};
use super::{EXCHANGE_EVENTS, OrderView, Side, routing};
use crate::markets::Market;

/// Most messages sent to the broker before waiting for their confirms (bounds memory for a
/// batch of thousands of trades).
const CONFIRM_CHUNK: usize = 2_000;

/// Namespace of the `exchange.events` message ids (UUID v5 of `{market}/{first_seq}/{index}`:
/// the market, the batch's first command and the message's place in the batch).
pub const EVENTS_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7a1b_58c4_4d0e_9a53_63c0_1e5b_7e11);

#[derive(Serialize)]
struct TradeExecuted<'a> {
    version: u8,
    id: Uuid,
    occurred_at: &'a str,
    trade_id: u64,
    market: &'a str,
    price: String,
    quantity: String,
    quote_quantity: String,
    maker_order_id: u64,
    taker_order_id: u64,
    maker_member: &'a str,
    taker_member: &'a str,
    taker_side: &'static str,
    maker_fee: String,
    taker_fee: String,
    fee_asset: &'a str,
    command_seq: u64,
}

#[derive(Serialize)]
struct OrderUpdated<'a> {
    version: u8,
    id: Uuid,
    occurred_at: &'a str,
    member: &'a str,
    order: &'a OrderView,
}

/// A settled trade as stored: amounts in base units (see the module docs for their units).
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

/// Stored form 1 (migration 0013): a batch's messages only: the trades (in trade order), then
/// the order updates (member, order; by order id); `occurred_at` (RFC 3339) is the batch's
/// time, which the trades carry. Still read (rows written between 0013 and 0014), no longer
/// written.
///
/// `postcard` stores fields by position and enum variants (`Side`) by index, not by name:
/// stored rows must stay readable, so a change to this shape, [`StoredTrade`], [`OrderView`]
/// or `Side` needs a new stored form (as 0014 added [`BatchOutcome`]).
#[derive(Debug, Serialize, Deserialize)]
struct StoredBatch {
    occurred_at: String,
    trades: Vec<StoredTrade>,
    orders: Vec<(String, OrderView)>,
}

/// A trade of a [`BatchOutcome`]: `ordinal` is its place among the trades of its command
/// (`trades.ordinal`, from 0).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OutcomeTrade {
    pub(crate) ordinal: u32,
    pub(crate) trade: StoredTrade,
}

/// An order's state at the end of a [`BatchOutcome`]'s batch: its member, the command that
/// placed it (`orders.seq`) and what members see.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OutcomeOrder {
    pub(crate) member: String,
    pub(crate) seq: u64,
    pub(crate) order: OrderView,
}

/// Stored form 2 (migration 0014): what a settled batch did, the source of its
/// `exchange.events` messages and of its rows in the read models `orders` and `trades`.
/// `occurred_at` (RFC 3339) is the batch's time, which its trades carry; `transfer_id` is its
/// `trade_settlement` ledger transfer (`None` when it netted to zero); then its trades (in
/// trade order) and the final state of every order it changed (by order id).
///
/// Positional like [`StoredBatch`]: a change to this shape, [`OutcomeTrade`],
/// [`OutcomeOrder`], [`StoredTrade`], [`OrderView`] or `Side` needs a new form.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchOutcome {
    pub(crate) occurred_at: String,
    pub(crate) transfer_id: Option<Uuid>,
    pub(crate) trades: Vec<OutcomeTrade>,
    pub(crate) orders: Vec<OutcomeOrder>,
}

impl From<StoredBatch> for BatchOutcome {
    /// A form-1 row, for its messages: its orders and trades were written in its own
    /// transaction and are never projected, so what only the projection needs is left at zero.
    fn from(batch: StoredBatch) -> Self {
        Self {
            occurred_at: batch.occurred_at,
            transfer_id: None,
            trades: batch
                .trades
                .into_iter()
                .map(|trade| OutcomeTrade { ordinal: 0, trade })
                .collect(),
            orders: batch
                .orders
                .into_iter()
                .map(|(member, order)| OutcomeOrder {
                    member,
                    seq: 0,
                    order,
                })
                .collect(),
        }
    }
}

/// The current stored form ([`BatchOutcome`]), the `form` column's value for it.
pub(crate) const OUTCOME_FORM: i16 = 2;

/// Decodes a stored `outcome` of `form` 1 or 2 into a [`BatchOutcome`].
///
/// Errors: a text naming the form and what did not decode.
pub(crate) fn decode(form: i16, outcome: &[u8]) -> Result<BatchOutcome, String> {
    match form {
        1 => postcard::from_bytes::<StoredBatch>(outcome)
            .map(BatchOutcome::from)
            .map_err(|e| format!("stored form 1 does not decode: {e}")),
        OUTCOME_FORM => postcard::from_bytes(outcome)
            .map_err(|e| format!("stored form {OUTCOME_FORM} does not decode: {e}")),
        other => Err(format!("unknown stored form {other}")),
    }
}

/// A settled batch's outcome in stored form 2 ([`BatchOutcome`]): its trades (in trade order),
/// then the final state of every order it changed (by id); one `trade.executed` message per
/// trade and one `order.updated` per order, in that order. Returns the bytes and the number
/// of messages (0 when the batch has no trades and changed no order: nothing to store).
pub(crate) fn encode<'a>(
    market: &Market,
    trades: &[TradeRow],
    orders: impl IntoIterator<Item = &'a OrderRow>,
    occurred_at: &str,
    transfer_id: Option<Uuid>,
) -> (Vec<u8>, usize) {
    let batch = BatchOutcome {
        occurred_at: occurred_at.to_owned(),
        transfer_id,
        trades: trades
            .iter()
            .map(|trade| OutcomeTrade {
                ordinal: trade.ordinal,
                trade: StoredTrade {
                    trade_id: trade.id,
                    market: trade.market.clone(),
                    price: trade.price,
                    quantity: trade.quantity,
                    quote_quantity: trade.quote_quantity,
                    maker_order_id: trade.maker_order_id,
                    taker_order_id: trade.taker_order_id,
                    maker_member: trade.maker_member.as_str().to_owned(),
                    taker_member: trade.taker_member.as_str().to_owned(),
                    taker_side: trade.taker_side,
                    maker_fee: trade.maker_fee,
                    taker_fee: trade.taker_fee,
                    fee_asset: trade.fee_asset.clone(),
                    command_seq: trade.seq,
                },
            })
            .collect(),
        orders: orders
            .into_iter()
            .map(|order| OutcomeOrder {
                member: order.member.as_str().to_owned(),
                seq: order.seq,
                order: order.view(market),
            })
            .collect(),
    };
    let count = batch.trades.len() + batch.orders.len();
    // Plain structs of integers and strings always encode.
    let bytes = postcard::to_allocvec(&batch).expect("a stored batch encodes");
    (bytes, count)
}

/// A stored row's messages, decoded once and rendered chunk by chunk.
enum StoredMessages {
    /// A row written before migration 0013: its messages as they were stored.
    Text(Vec<OutgoingMessage>),
    /// The compact form, with the market and first command that name its messages' ids.
    Compact {
        market: String,
        first_seq: u64,
        batch: BatchOutcome,
    },
}

impl StoredMessages {
    /// Decodes `row`, whichever form it has.
    ///
    /// Errors: a text naming the row and what did not decode (it was not written by
    /// [`encode`] or by the code before 0013).
    fn of(row: &EventBatchRow) -> Result<Self, String> {
        match (&row.events, &row.outcome) {
            (Some(text), _) => parse_text(row.id, text).map(Self::Text),
            (None, Some(outcome)) => {
                let first_seq = u64::try_from(row.first_seq).map_err(|e| e.to_string())?;
                let batch = decode(row.form, outcome)
                    .map_err(|e| format!("trading_event_batches {}: {e}", row.id))?;
                Ok(Self::Compact {
                    market: row.market.clone(),
                    first_seq,
                    batch,
                })
            }
            (None, None) => Err(format!("trading_event_batches {} holds no events", row.id)),
        }
    }

    /// How many messages the row holds.
    fn len(&self) -> usize {
        match self {
            Self::Text(messages) => messages.len(),
            Self::Compact { batch, .. } => batch.trades.len() + batch.orders.len(),
        }
    }

    /// Messages `range` (indexes in stored order, within [`Self::len`]) as JSON messages.
    fn render(&self, range: std::ops::Range<usize>) -> Vec<OutgoingMessage> {
        let (market, first_seq, batch) = match self {
            Self::Text(messages) => return messages[range].to_vec(),
            Self::Compact {
                market,
                first_seq,
                batch,
            } => (market, *first_seq, batch),
        };
        let message = |routing_key: &str, id: Uuid, body: Vec<u8>| OutgoingMessage {
            exchange: EXCHANGE_EVENTS.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: id.to_string(),
            body,
            headers: Vec::new(),
            correlation_id: None,
        };
        range
            .map(|index| {
                let id = Uuid::new_v5(
                    &EVENTS_ID_NAMESPACE,
                    format!("{market}/{first_seq}/{index}").as_bytes(),
                );
                if let Some(OutcomeTrade { trade, .. }) = batch.trades.get(index) {
                    let body = TradeExecuted {
                        version: 1,
                        id,
                        occurred_at: &batch.occurred_at,
                        trade_id: trade.trade_id,
                        market: &trade.market,
                        price: trade.price.to_string(),
                        quantity: trade.quantity.to_string(),
                        quote_quantity: trade.quote_quantity.to_string(),
                        maker_order_id: trade.maker_order_id,
                        taker_order_id: trade.taker_order_id,
                        maker_member: &trade.maker_member,
                        taker_member: &trade.taker_member,
                        taker_side: trade.taker_side.as_str(),
                        maker_fee: trade.maker_fee.to_string(),
                        taker_fee: trade.taker_fee.to_string(),
                        fee_asset: &trade.fee_asset,
                        command_seq: trade.command_seq,
                    };
                    let json = serde_json::to_vec(&body).expect("event serializes");
                    message(routing::TRADE_EXECUTED, id, json)
                } else {
                    let OutcomeOrder { member, order, .. } =
                        &batch.orders[index - batch.trades.len()];
                    let body = OrderUpdated {
                        version: 1,
                        id,
                        occurred_at: &order.updated_at,
                        member,
                        order,
                    };
                    let json = serde_json::to_vec(&body).expect("event serializes");
                    message(routing::ORDER_UPDATED, id, json)
                }
            })
            .collect()
    }
}

/// The messages of a row written before migration 0013 (`events` text), in stored order.
///
/// Errors: a text naming the malformed line.
fn parse_text(id: i64, events: &str) -> Result<Vec<OutgoingMessage>, String> {
    events
        .lines()
        .map(|line| {
            let (routing_key, message_id, body) = parse_line(line).ok_or_else(|| {
                format!("trading_event_batches {id}: malformed stored message {line:?}")
            })?;
            Ok(OutgoingMessage {
                exchange: EXCHANGE_EVENTS.to_owned(),
                routing_key: routing_key.to_owned(),
                message_id: message_id.to_owned(),
                body: body.as_bytes().to_vec(),
                headers: Vec::new(),
                correlation_id: None,
            })
        })
        .collect()
}

/// A `trading_event_batches` row as the relay reads it.
#[derive(sqlx::FromRow)]
struct EventBatchRow {
    id: i64,
    market: String,
    first_seq: i64,
    published: i32,
    events: Option<String>,
    form: i16,
    outcome: Option<Vec<u8>>,
}

/// Every stored `exchange.events` message not yet published, as (routing key, message id,
/// JSON body), a market's batches in command order: what the relay will publish, for checks
/// and tests.
///
/// Errors: the database's, or a stored row that does not decode.
pub async fn pending_messages(pool: &PgPool) -> Result<Vec<(String, String, String)>, OutboxError> {
    let rows: Vec<EventBatchRow> = sqlx::query_as(
        "SELECT id, market, first_seq, published, events, form, outcome FROM trading_event_batches
          WHERE published_at IS NULL ORDER BY market, first_seq",
    )
    .fetch_all(pool)
    .await?;
    let mut pending = Vec::new();
    for row in &rows {
        let stored = StoredMessages::of(row).map_err(OutboxError::Malformed)?;
        let skip = usize::try_from(row.published)
            .unwrap_or(0)
            .min(stored.len());
        pending.extend(stored.render(skip..stored.len()).into_iter().map(|m| {
            let body = String::from_utf8(m.body).expect("rendered JSON is UTF-8");
            (m.routing_key, m.message_id, body)
        }));
    }
    Ok(pending)
}

/// Writes the stored outcome `outcome` (form 2, from [`encode`], `count` messages) of the
/// batch of commands `first_seq ..= last_seq` inside the caller's transaction; with `publish`
/// false it is written as already published (the projection still reads it).
///
/// Errors: the database's.
pub(crate) async fn insert_batch(
    conn: &mut PgConnection,
    market: &str,
    (first_seq, last_seq): (u64, u64),
    outcome: &[u8],
    count: usize,
    publish: bool,
) -> Result<(), sqlx::Error> {
    let seq = |value: u64| i64::try_from(value).expect("sequence numbers stay below 2^63");
    let count = i32::try_from(count).expect("a batch has fewer than 2^31 messages");
    sqlx::query(
        "INSERT INTO trading_event_batches
                (market, first_seq, last_seq, event_count, form, outcome, published, published_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN 0 ELSE $4 END,
                 CASE WHEN $7 THEN NULL ELSE now() END)",
    )
    .bind(market)
    .bind(seq(first_seq))
    .bind(seq(last_seq))
    .bind(count)
    .bind(OUTCOME_FORM)
    .bind(outcome)
    .bind(publish)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One stored message: (routing key, message id, JSON body).
fn parse_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut fields = line.splitn(3, '\t');
    Some((fields.next()?, fields.next()?, fields.next()?))
}

/// Publishes the oldest event batch that is not fully published, from its first unconfirmed
/// message on, with publisher confirms (`confirm_timeout` per chunk of
/// `CONFIRM_CHUNK` (2,000) messages), without AMQP `mandatory`. The row is locked
/// (`FOR UPDATE SKIP LOCKED`: two relays never publish the same batch) and its `published`
/// count is advanced after each confirmed chunk; `published_at` is set when every message is
/// confirmed. A market's batches are taken in command order (`first_seq`), and only once the
/// batch before it is fully published, so a market's messages never overtake each other, not
/// even with several relays; markets are served oldest row first. Returns how many messages
/// were published (0: nothing waiting).
///
/// Errors: [`OutboxError`]; the confirmed chunks are recorded even then, and the failure is
/// counted in `attempts` / `last_error`.
pub async fn publish_next_batch(
    pool: &PgPool,
    publisher: &ConfirmingPublisher,
    confirm_timeout: Duration,
) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    // A market's batches are written concurrently, so their ids need not follow their
    // commands; they commit in command order. A batch is taken only when no earlier batch
    // of its market waits (unpublished, or locked by another relay).
    let row: Option<EventBatchRow> = sqlx::query_as(
        "SELECT id, market, first_seq, published, events, form, outcome FROM trading_event_batches b
          WHERE published_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM trading_event_batches e
                             WHERE e.market = b.market AND e.published_at IS NULL
                               AND e.first_seq < b.first_seq)
          ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(0);
    };
    let id = row.id;
    let skip = usize::try_from(row.published).expect("published is checked ≥ 0");
    let mut sent_total = 0;
    let mut failure = None;
    match StoredMessages::of(&row) {
        Err(reason) => failure = Some(OutboxError::Malformed(reason)),
        Ok(stored) => {
            let total = stored.len();
            let mut start = skip.min(total);
            while start < total {
                let messages = stored.render(start..total.min(start + CONFIRM_CHUNK));
                let outcome =
                    tokio::time::timeout(confirm_timeout, publisher.publish_all(&messages)).await;
                let (sent, error) = match outcome {
                    Ok((sent, error)) => (sent.min(messages.len()), error.map(OutboxError::from)),
                    Err(_) => (0, Some(OutboxError::ConfirmTimeout(confirm_timeout))),
                };
                sent_total += sent;
                if let Some(error) = error {
                    failure = Some(error);
                    break;
                }
                start += messages.len();
            }
        }
    }
    let published = i32::try_from(skip + sent_total).expect("fits: at most event_count");
    sqlx::query(
        "UPDATE trading_event_batches
            SET published = $2,
                published_at = CASE WHEN $2 = event_count THEN now() END,
                attempts = attempts + $3::int,
                last_error = coalesce($4, last_error)
          WHERE id = $1",
    )
    .bind(id)
    .bind(published)
    .bind(i32::from(failure.is_some()))
    .bind(failure.as_ref().map(ToString::to_string))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(sent_total),
    }
}

/// How many `exchange.events` messages wait to be published.
///
/// Errors: the database's.
pub async fn unpublished(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(event_count - published), 0)::bigint FROM trading_event_batches
          WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::{
        BatchOutcome, OUTCOME_FORM, OrderView, Side, StoredBatch, StoredTrade, decode, parse_line,
    };
    use crate::trading::TimeInForce;

    /// A stored batch of one trade and one order update, every field set.
    fn sample() -> StoredBatch {
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
            orders: vec![(
                "alice".into(),
                OrderView {
                    id: 1,
                    market: "btc_usdt".into(),
                    side: Side::Sell,
                    kind: crate::trading::OrderKind::Limit,
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
                },
            )],
        }
    }

    /// Stored rows must stay readable: the stored form of a known batch is these bytes (a
    /// change of field order, type or enum variants changes them and fails here), and they
    /// decode back to the batch.
    #[test]
    fn stored_form_is_stable() {
        let bytes = postcard::to_allocvec(&sample()).expect("encodes");
        assert_eq!(hex::encode(&bytes), GOLDEN);
        let decoded: StoredBatch = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(format!("{decoded:?}"), format!("{:?}", sample()));
    }

    /// Form 2 is stable like form 1: a known outcome (the sample's trade and order, with a
    /// transfer id, an ordinal and the order's placing command) is these bytes, decodes back,
    /// and a form-1 row decodes to the same messages with the projection's fields at zero.
    #[test]
    fn outcome_form_is_stable() {
        let mut outcome = BatchOutcome::from(sample());
        outcome.transfer_id = Some(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ));
        outcome.trades[0].ordinal = 3;
        outcome.orders[0].seq = 1;
        let bytes = postcard::to_allocvec(&outcome).expect("encodes");
        assert_eq!(hex::encode(&bytes), GOLDEN_OUTCOME);
        let decoded = decode(OUTCOME_FORM, &bytes).expect("decodes");
        assert_eq!(format!("{decoded:?}"), format!("{outcome:?}"));

        let form_1 = postcard::to_allocvec(&sample()).expect("encodes");
        let decoded = decode(1, &form_1).expect("form 1 decodes");
        assert_eq!(decoded.transfer_id, None);
        assert_eq!(
            format!("{decoded:?}"),
            format!("{:?}", BatchOutcome::from(sample()))
        );
        assert!(decode(3, &bytes).is_err(), "an unknown form is refused");
    }

    const GOLDEN_OUTCOME: &str = concat!(
        "1b323032362d31322d30375430333a30303a30302e3030303030315a01100123456789abcdef0123",
        "456789abcdef010307086274635f75736474a08d06b817e0a712010205616c69636503626f6200ac",
        "02d8040455534454020105616c6963650101086274635f757364740100010631303030303001043530",
        "303000043330303006333030303030046f70656e0001000103632d3104323030300342544314323032",
        "362d31322d30375430323a35393a35395a1b323032362d31322d30375430333a30303a30302e303030",
        "3030315a",
    );

    const GOLDEN: &str = concat!(
        "1b323032362d31322d30375430333a30303a30302e3030303030315a0107086274635f75736474a0",
        "8d06b817e0a712010205616c69636503626f6200ac02d8040455534454020105616c696365010862",
        "74635f757364740100010631303030303001043530303000043330303006333030303030046f7065",
        "6e0001000103632d3104323030300342544314323032362d31322d30375430323a35393a35395a1b",
        "323032362d31322d30375430333a30303a30302e3030303030315a",
    );

    /// The stored form splits into routing key, id and body; the body may hold tabs escaped.
    #[test]
    fn stored_lines_split_in_three() {
        assert_eq!(
            parse_line("trade.executed\tid-1\t{\"a\":\"x\\ty\"}"),
            Some(("trade.executed", "id-1", "{\"a\":\"x\\ty\"}"))
        );
        assert_eq!(parse_line("no tabs"), None);
    }
}
