//! The `exchange.events` messages of a settled batch: encoded into one
//! `trading_event_batches` row in the batch's transaction (`encode`), and published from
//! there by the relay ([`publish_next_batch`]), one AMQP message per event.
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
//! Stored form (`events` column): one message per line, `routing key TAB message id TAB JSON
//! body`; JSON text never holds a raw tab or newline, so the split is exact.

use std::time::Duration;

use coinhub_events::outbox::OutboxError;
use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::store::{OrderRow, TradeRow};
use super::{EXCHANGE_EVENTS, OrderView, routing};
use crate::markets::Market;

/// Most messages sent to the broker before waiting for their confirms (bounds memory for a
/// batch of thousands of trades).
const CONFIRM_CHUNK: usize = 2_000;

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

fn push_line<T: Serialize>(out: &mut String, routing_key: &str, id: Uuid, body: &T) {
    out.push_str(routing_key);
    out.push('\t');
    out.push_str(id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    out.push('\t');
    // Serializing plain structs of strings and integers cannot fail.
    out.push_str(&serde_json::to_string(body).expect("event serializes"));
    out.push('\n');
}

/// The batch's messages in stored form: one `trade.executed` per trade (in trade order), then
/// one `order.updated` per order the batch changed (by id). Returns the text and the number of
/// messages (0 when the batch has no trades and changed no order).
pub(crate) fn encode<'a>(
    market: &Market,
    trades: &[TradeRow],
    orders: impl IntoIterator<Item = &'a OrderRow>,
    occurred_at: &str,
) -> (String, usize) {
    let mut out = String::with_capacity(trades.len() * 640);
    let mut count = 0;
    for trade in trades {
        let body = TradeExecuted {
            version: 1,
            id: Uuid::new_v4(),
            occurred_at,
            trade_id: trade.id,
            market: &trade.market,
            price: trade.price.to_string(),
            quantity: trade.quantity.to_string(),
            quote_quantity: trade.quote_quantity.to_string(),
            maker_order_id: trade.maker_order_id,
            taker_order_id: trade.taker_order_id,
            maker_member: trade.maker_member.as_str(),
            taker_member: trade.taker_member.as_str(),
            taker_side: trade.taker_side.as_str(),
            maker_fee: trade.maker_fee.to_string(),
            taker_fee: trade.taker_fee.to_string(),
            fee_asset: &trade.fee_asset,
            command_seq: trade.seq,
        };
        push_line(&mut out, routing::TRADE_EXECUTED, body.id, &body);
        count += 1;
    }
    for order in orders {
        let view = order.view(market);
        let body = OrderUpdated {
            version: 1,
            id: Uuid::new_v4(),
            occurred_at: &view.updated_at,
            member: order.member.as_str(),
            order: &view,
        };
        push_line(&mut out, routing::ORDER_UPDATED, body.id, &body);
        count += 1;
    }
    (out, count)
}

/// Writes the stored form `events` (from [`encode`], `count` messages) of the batch of
/// commands `first_seq ..= last_seq` inside the caller's transaction.
///
/// Errors: the database's.
pub(crate) async fn insert_batch(
    conn: &mut PgConnection,
    market: &str,
    (first_seq, last_seq): (u64, u64),
    events: &str,
    count: usize,
) -> Result<(), sqlx::Error> {
    let seq = |value: u64| i64::try_from(value).expect("sequence numbers stay below 2^63");
    sqlx::query(
        "INSERT INTO trading_event_batches (market, first_seq, last_seq, event_count, events)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(market)
    .bind(seq(first_seq))
    .bind(seq(last_seq))
    .bind(i32::try_from(count).expect("a batch has fewer than 2^31 messages"))
    .bind(events)
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
    let row: Option<(i64, i32, String)> = sqlx::query_as(
        "SELECT id, published, events FROM trading_event_batches b
          WHERE published_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM trading_event_batches e
                             WHERE e.market = b.market AND e.published_at IS NULL
                               AND e.first_seq < b.first_seq)
          ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, published, events)) = row else {
        return Ok(0);
    };
    let skip = usize::try_from(published).expect("published is checked ≥ 0");
    let mut sent_total = 0;
    let lines: Vec<&str> = events.lines().skip(skip).collect();
    let mut failure = None;
    for chunk in lines.chunks(CONFIRM_CHUNK) {
        let mut messages = Vec::with_capacity(chunk.len());
        for line in chunk {
            let Some((routing_key, message_id, body)) = parse_line(line) else {
                // Written by `encode` only; a malformed line is a bug, not input.
                panic!("trading_event_batches {id}: malformed stored message {line:?}");
            };
            messages.push(OutgoingMessage {
                exchange: EXCHANGE_EVENTS.to_owned(),
                routing_key: routing_key.to_owned(),
                message_id: message_id.to_owned(),
                body: body.as_bytes().to_vec(),
                headers: Vec::new(),
                correlation_id: None,
            });
        }
        let outcome = tokio::time::timeout(confirm_timeout, publisher.publish_all(&messages)).await;
        let (sent, error) = match outcome {
            Ok((sent, error)) => (sent.min(messages.len()), error.map(OutboxError::from)),
            Err(_) => (0, Some(OutboxError::ConfirmTimeout(confirm_timeout))),
        };
        sent_total += sent;
        if let Some(error) = error {
            failure = Some(error);
            break;
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
    use super::parse_line;

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
