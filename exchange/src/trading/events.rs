//! The `exchange.events` messages of a settled batch: stored compactly in one
//! `trading_event_batches` row in the batch's transaction (`outcome.rs`), and rendered to JSON
//! and published from there by the relay ([`publish_next_batch`]), one AMQP message per event.
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
//! Stored form (`outcome` column): the batch's outcome without JSON, `postcard`-encoded (form
//! 3 since migration 0020: integers, no text but members and labels; forms 1 and 2 are still
//! read, see `outcome.rs`), and no JSON formatting while the batch is settled. Since
//! migration 0014 it also holds what the read models need, and is the source the projector
//! writes `orders` and `trades` from (`projection.rs`); such a row is written for every batch
//! that traded or changed an order, already marked published when no events go out. A
//! message's id is derived, not stored: UUID v5 of `{market}/{first_seq}/{index}` in
//! [`EVENTS_ID_NAMESPACE`], so a message published again after a crash keeps its id. Rows
//! written before 0013 keep their `events` text (one message per line, `routing key TAB
//! message id TAB JSON body`) and are published from it.

use std::time::Duration;

use coinhub_events::outbox::OutboxError;
use coinhub_events::publisher::{ConfirmingPublisher, OutgoingMessage};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::outcome::{self, BatchOutcome, OUTCOME_FORM, OutcomeOrder};
use super::{EXCHANGE_EVENTS, OrderView, routing};

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
                let batch = outcome::decode(row.form, outcome)
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
        let occurred_at = outcome::rfc3339_of_micros(batch.occurred_at);
        range
            .map(|index| {
                let id = Uuid::new_v5(
                    &EVENTS_ID_NAMESPACE,
                    format!("{market}/{first_seq}/{index}").as_bytes(),
                );
                if let Some(trade) = batch.trades.get(index) {
                    let body = TradeExecuted {
                        version: 1,
                        id,
                        occurred_at: &occurred_at,
                        trade_id: trade.trade_id,
                        market,
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
                        fee_asset: &batch.quote,
                        command_seq: trade.command_seq,
                    };
                    let json = serde_json::to_vec(&body).expect("event serializes");
                    message(routing::TRADE_EXECUTED, id, json)
                } else {
                    let OutcomeOrder { member, order, .. } =
                        &batch.orders[index - batch.trades.len()];
                    let order = order.view(market, &batch.base, &batch.quote);
                    let body = OrderUpdated {
                        version: 1,
                        id,
                        occurred_at: &order.updated_at,
                        member,
                        order: &order,
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

/// Writes the stored outcome `outcome` (form 3, from `outcome::encode`, `count` messages) of the
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
