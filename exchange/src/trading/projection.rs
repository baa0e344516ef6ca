//! The read models `orders` and `trades`, projected from the settled batches' stored
//! outcomes (`trading_event_batches.outcome`, forms 2 and 3, see `outcome.rs`) after they
//! commit.
//!
//! A batch's transaction holds only its command log row, its netted ledger transfer and its
//! outcome row: those are the record, and a batch is settled when they commit. Its order and
//! trade rows follow here, several batches per transaction, from the outcome rows. Each
//! market has a watermark (`trading_projection.projected_seq`): every batch whose commands
//! end at or before it is in `orders` and `trades`, and their ids in each member's posting
//! lists (`orders_by_member`, `trades_by_member`: one row per member a projection touches,
//! instead of member indexes with an entry per row; migration 0030). A projector holds the
//! market's advisory lock (transaction-scoped) while it reads the watermark and writes, so a
//! market's batches are projected one at a time and in command order, by however many
//! projectors run (the engine's background task, and every reader that catches up).
//!
//! Readers that need what a committed batch did catch up first ([`catch_up`]): the order
//! history and trades of the API (read-your-writes), and the book reload at start and after
//! a failed batch (it reads the resting orders' rows). At start every market is caught up
//! before the engine reads the largest order and trade ids.
//!
//! An order is new to the projection when the command that placed it is after the
//! watermark; otherwise its row exists and is updated. Each order is written once per
//! projection, in its state at the end of the last batch projected.

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use super::TradingError;
use super::copy_binary::BinaryRows;
use super::outcome::{self, BatchOutcome, OrderUnits, OutcomeOrder, OutcomeTrade};
use super::store::i64_of;

/// Most outcome rows (batches) projected in one transaction.
const BATCHES_PER_PROJECTION: i64 = 16;
/// How long the background projector sleeps when no batch commits (it also catches up
/// anything a previous process left).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Projects the next batches of `market` after its watermark (at most
/// `BATCHES_PER_PROJECTION`) in one transaction. Returns the new watermark (the last command
/// of the last batch projected), or `None` when the market was caught up.
///
/// Errors: [`TradingError::Database`], also for a market without a watermark row (not
/// recorded by the engine), an outcome row that does not decode, or an order update whose
/// row is missing; nothing is projected then.
pub async fn project_next(pool: &PgPool, market: &str) -> Result<Option<u64>, TradingError> {
    // The update joins a few thousand order ids against `orders`: probe its primary key for
    // each. With the table's statistics behind its growth (autovacuum has not analyzed it
    // yet), PostgreSQL otherwise scans all of `orders` once per updated order (measured:
    // 0.6-1.6 s for 5,000 updates at 100 k orders, against 31 ms by the index). JIT off: a
    // scan the settings cannot avoid would be priced past the JIT threshold and compiled
    // (~45 ms) in every projection (migration 0029 says the same of the ledger's functions).
    let started = std::time::Instant::now();
    let mut tx = pool
        .begin_with(
            "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
             SET LOCAL enable_mergejoin = off; SET LOCAL jit = off",
        )
        .await?;
    // One projector per market at a time. An advisory lock, not `FOR UPDATE` on the
    // watermark row: a row lock gives the transaction an id at once, and a transaction id
    // holds back the pruning of every row version written after it began, so the balance
    // updates of the batches settled meanwhile would pile up versions of the busiest
    // accounts for the whole projection. This way the id comes with the first row written.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('coinhub.trading_projection'), hashtext($1))",
    )
    .bind(market)
    .execute(&mut *tx)
    .await?;
    let watermark: Option<i64> =
        sqlx::query_scalar("SELECT projected_seq FROM trading_projection WHERE market = $1")
            .bind(market)
            .fetch_optional(&mut *tx)
            .await?;
    let watermark = watermark.ok_or_else(|| {
        TradingError::Database(format!("market {market} has no projection watermark"))
    })?;
    let rows: Vec<(i64, i64, i16, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT first_seq, last_seq, form, outcome FROM trading_event_batches
          WHERE market = $1 AND first_seq > $2 ORDER BY first_seq LIMIT $3",
    )
    .bind(market)
    .bind(watermark)
    .bind(BATCHES_PER_PROJECTION)
    .fetch_all(&mut *tx)
    .await?;
    let Some(&(_, projected_to, _, _)) = rows.last() else {
        return Ok(None);
    };
    let batches = rows.len();
    let watermark = u64::try_from(watermark).expect("checked ≥ 0 by the table");
    // Decoding and encoding thousands of rows is CPU work: off the async workers, which run
    // the markets' tasks.
    let projection = off_the_workers(market, move || {
        let mut projection = Projection::default();
        for (first_seq, _, form, outcome) in rows {
            let outcome = match (form, outcome) {
                (2.., Some(bytes)) => outcome::decode(form, &bytes),
                _ => Err(format!("form {form} holds no read-model data")),
            }
            .map_err(|e| format!("batch {first_seq}: {e}"))?;
            projection.add(outcome);
        }
        Ok(projection)
    })
    .await?;
    let numbers = member_numbers(&mut tx, projection.members()).await?;
    let market_name = market.to_owned();
    let projected = off_the_workers(market, move || {
        projection
            .rows(&market_name, watermark, &numbers)
            .map_err(|e| format!("after {watermark}: {e}"))
    })
    .await?;
    let (trades, orders) = (
        projected.trades.rows(),
        projected.orders.rows() + projected.updates.ids.len(),
    );
    projected.write(&mut tx, market).await?;
    sqlx::query(
        "UPDATE trading_projection SET projected_seq = $2, updated_at = now() WHERE market = $1",
    )
    .bind(market)
    .bind(projected_to)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::debug!(
        market,
        batches,
        trades,
        orders,
        projected_to,
        elapsed_us = started.elapsed().as_micros(),
        "projected"
    );
    Ok(Some(
        u64::try_from(projected_to).expect("checked > 0 by the table"),
    ))
}

/// Projects every batch of `market` committed before the call: returns once the watermark
/// has reached the last of them. Batches committed meanwhile are left to the next call, so
/// a reader under a sustained peak does not chase the head.
///
/// Errors: as [`project_next`].
pub async fn catch_up(pool: &PgPool, market: &str) -> Result<(), TradingError> {
    let target: Option<i64> = sqlx::query_scalar(
        "SELECT last_seq FROM trading_event_batches WHERE market = $1
          ORDER BY first_seq DESC LIMIT 1",
    )
    .bind(market)
    .fetch_optional(pool)
    .await?;
    let Some(target) = target.and_then(|seq| u64::try_from(seq).ok()) else {
        return Ok(());
    };
    while let Some(projected_to) = project_next(pool, market).await? {
        if projected_to >= target {
            break;
        }
    }
    Ok(())
}

/// [`catch_up`] for every market with a watermark, configured or not.
///
/// Errors: as [`project_next`].
pub async fn catch_up_all(pool: &PgPool) -> Result<(), TradingError> {
    let markets: Vec<String> =
        sqlx::query_scalar("SELECT market FROM trading_projection ORDER BY market")
            .fetch_all(pool)
            .await?;
    for market in markets {
        catch_up(pool, &market).await?;
    }
    Ok(())
}

/// Gives `market` a watermark at 0 unless it has one (a market recorded for the first time;
/// migration 0014 gave markets with history theirs).
///
/// Errors: the database's.
pub(crate) async fn record_market(pool: &PgPool, market: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO trading_projection (market, projected_seq) VALUES ($1, 0)
         ON CONFLICT (market) DO NOTHING",
    )
    .bind(market)
    .execute(pool)
    .await?;
    Ok(())
}

/// The engine's background projector: catches `markets` up whenever a batch commits (a
/// message on `committed`; coalesced) and every [`IDLE_WAKE`]; ends when every sender of
/// `committed` is gone (the engine stopped). A failure is logged and retried at the next
/// wake: nothing is lost, readers catch up themselves.
pub(crate) async fn run(pool: PgPool, markets: Vec<String>, mut committed: mpsc::Receiver<()>) {
    loop {
        for market in &markets {
            if let Err(error) = catch_up(&pool, market).await {
                tracing::warn!(%market, %error, "projecting orders and trades failed; retrying");
            }
        }
        if let Ok(None) = tokio::time::timeout(IDLE_WAKE, committed.recv()).await {
            return;
        }
    }
}

/// The rows of consecutive batches of one market: every trade, and each order's last state.
#[derive(Default)]
struct Projection {
    /// (batch time, µs since the Unix epoch; the batch's ledger transfer; the trade).
    trades: Vec<(i64, Option<uuid::Uuid>, OutcomeTrade)>,
    /// Every state of the batches' orders, in the order the batches ran ([`last_states`]
    /// keeps each order's last).
    orders: Vec<OutcomeOrder>,
    /// The market's base and quote assets (the first batch that names them).
    base: String,
    quote: String,
}

impl Projection {
    /// Adds the next batch (a later state of an order replaces an earlier one).
    fn add(&mut self, outcome: BatchOutcome) {
        let BatchOutcome {
            occurred_at,
            transfer_id,
            base,
            quote,
            trades,
            orders,
        } = outcome;
        if self.base.is_empty() {
            self.base = base;
        }
        if self.quote.is_empty() {
            self.quote = quote;
        }
        self.trades.extend(
            trades
                .into_iter()
                .map(|trade| (occurred_at, transfer_id, trade)),
        );
        self.orders.extend(orders);
    }

    /// Every member of the projection's orders and trades, once each.
    fn members(&self) -> Vec<String> {
        let mut members: FxHashSet<&str> = FxHashSet::default();
        members.extend(self.orders.iter().map(|order| order.member.as_str()));
        for (_, _, trade) in &self.trades {
            members.insert(&trade.maker_member);
            members.insert(&trade.taker_member);
        }
        members.into_iter().map(str::to_owned).collect()
    }

    /// The rows to write: new orders (placed after `watermark`) and trades as binary `COPY`
    /// streams, earlier orders as update columns, and the members' posting lists. `numbers`
    /// maps each member id to its number (`trading_members`), which the posting lists key on.
    ///
    /// Errors: a member without a number; an asset the rows need that no batch named.
    fn rows(
        self,
        market: &str,
        watermark: u64,
        numbers: &FxHashMap<String, i64>,
    ) -> Result<ProjectionRows, String> {
        let number = |member: &str| {
            numbers
                .get(member)
                .copied()
                .ok_or_else(|| format!("member {member} has no number in trading_members"))
        };
        let asset = |symbol: &'_ str| {
            if symbol.is_empty() {
                Err(format!(
                    "no batch of {market} named its base and quote assets"
                ))
            } else {
                Ok(())
            }
        };
        let mut orders = BinaryRows::with_capacity(self.orders.len() * 256);
        let mut updates = OrderUpdates::default();
        let mut postings = Postings::default();
        for OutcomeOrder { member, seq, order } in last_states(self.orders) {
            if seq <= watermark {
                updates.push(order);
                continue;
            }
            let hold_asset = order.hold_asset(&self.base, &self.quote);
            asset(hold_asset)?;
            postings.orders.push(number(&member)?, order.id);
            orders.row(19);
            orders.int8(i64_of(order.id));
            orders.text(market);
            orders.text(&member);
            orders.text(order.side.as_str());
            orders.text(order.kind.as_str());
            orders.numeric_or_null(order.price);
            orders.numeric_or_null(order.quantity);
            orders.numeric_or_null(order.quote_amount);
            orders.text_or_null(order.time_in_force.map(super::TimeInForce::as_str));
            orders.text_or_null(order.client_order_id.as_deref());
            orders.numeric(order.filled);
            orders.numeric(order.filled_quote);
            orders.numeric(order.hold);
            orders.text(hold_asset);
            orders.text(order.status.as_str());
            orders.text_or_null(order.reason.as_deref());
            orders.int8(i64_of(seq));
            orders.timestamptz(order.created_at);
            orders.timestamptz(order.updated_at);
        }
        if !self.trades.is_empty() {
            asset(&self.quote)?;
        }
        let mut trades = BinaryRows::with_capacity(self.trades.len() * 256);
        for (created_at, transfer_id, t) in &self.trades {
            postings.trades.push(number(&t.maker_member)?, t.trade_id);
            postings.trades.push(number(&t.taker_member)?, t.trade_id);
            trades.row(17);
            trades.int8(i64_of(t.trade_id));
            trades.text(market);
            trades.int8(i64_of(t.command_seq));
            trades.int4(i32::try_from(t.ordinal).map_err(|_| format!("ordinal {}", t.ordinal))?);
            trades.numeric(t.price);
            trades.numeric(t.quantity);
            trades.numeric(t.quote_quantity);
            trades.int8(i64_of(t.maker_order_id));
            trades.int8(i64_of(t.taker_order_id));
            trades.text(&t.maker_member);
            trades.text(&t.taker_member);
            trades.text(t.taker_side.as_str());
            trades.numeric(t.maker_fee);
            trades.numeric(t.taker_fee);
            trades.text(&self.quote);
            trades.uuid_or_null(*transfer_id);
            trades.timestamptz(*created_at);
        }
        Ok(ProjectionRows {
            orders,
            updates,
            trades,
            postings,
        })
    }
}

/// Each order's last state, by id: `orders` are the states of consecutive batches in the
/// order the batches ran, so of an order's states the last is its latest. (A stable sort:
/// each batch's orders are already by id, so it merges runs.)
fn last_states(mut orders: Vec<OutcomeOrder>) -> Vec<OutcomeOrder> {
    orders.sort_by_key(|state| state.order.id);
    let mut last: Vec<OutcomeOrder> = Vec::with_capacity(orders.len());
    for state in orders {
        match last.last_mut() {
            Some(previous) if previous.order.id == state.order.id => *previous = state,
            _ => last.push(state),
        }
    }
    last
}

/// The number of each of `members` (`trading_members`, migration 0004), which the read
/// models' posting lists key on (migration 0030).
///
/// Errors: the database's.
async fn member_numbers(
    conn: &mut PgConnection,
    members: Vec<String>,
) -> Result<FxHashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT member_id, number FROM trading_members WHERE member_id = ANY($1)")
            .bind(&members)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Runs `work` (CPU-bound) on a blocking thread. Its error, or its thread's panic, is a
/// [`TradingError::Database`] naming what `market`'s projection was doing.
async fn off_the_workers<T: Send + 'static>(
    market: &str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, TradingError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TradingError::Database(format!("projecting {market}: {e}")))?
        .map_err(|e| TradingError::Database(format!("projecting {market}: {e}")))
}

/// A projection's rows, ready to write.
struct ProjectionRows {
    /// New orders.
    orders: BinaryRows,
    updates: OrderUpdates,
    trades: BinaryRows,
    /// Who the new orders and the trades belong to.
    postings: Postings,
}

impl ProjectionRows {
    /// Writes the rows in the caller's transaction: the posting lists, the new orders and the
    /// trades (four `COPY`s), and one `UPDATE` of the earlier orders.
    ///
    /// Errors: [`TradingError::Database`], also when an earlier order has no row.
    async fn write(self, conn: &mut PgConnection, market: &str) -> Result<(), TradingError> {
        self.postings.write(conn, market).await?;
        if self.orders.rows() > 0 {
            copy_in(
                conn,
                "COPY orders (id, market, member_id, side, kind, price, quantity, quote_amount,
                              time_in_force, client_order_id, filled, filled_quote, hold,
                              hold_asset, status, reason, seq, created_at, updated_at)
                 FROM STDIN (FORMAT binary)",
                self.orders,
            )
            .await?;
        }
        self.updates.apply(conn, market).await?;
        if self.trades.rows() == 0 {
            return Ok(());
        }
        copy_in(
            conn,
            "COPY trades (id, market, seq, ordinal, price, quantity, quote_quantity,
                          maker_order_id, taker_order_id, maker_member, taker_member,
                          taker_side, maker_fee, taker_fee, fee_asset, transfer_id, created_at)
             FROM STDIN (FORMAT binary)",
            self.trades,
        )
        .await
    }
}

/// The posting lists of a projection (migration 0030): which member each new order and each
/// trade belongs to (a trade to its maker and to its taker).
#[derive(Default)]
struct Postings {
    orders: MemberIds,
    trades: MemberIds,
}

/// Each member's ids (orders or trades), by member number.
#[derive(Default)]
struct MemberIds(FxHashMap<i64, Vec<i64>>);

impl MemberIds {
    fn push(&mut self, number: i64, id: u64) {
        self.0.entry(number).or_default().push(i64_of(id));
    }

    /// One row per member for `COPY … (member_number, last_id, market, ids)`: its ids,
    /// ascending, and the largest.
    fn rows(self, market: &str) -> BinaryRows {
        let mut rows = BinaryRows::with_capacity(self.0.len() * 64);
        for (number, mut ids) in self.0 {
            ids.sort_unstable();
            let last = *ids.last().expect("a member is added with an id");
            rows.row(4);
            rows.int8(number);
            rows.int8(last);
            rows.text(market);
            rows.int8_array(&ids);
        }
        rows
    }
}

impl Postings {
    /// Writes one `orders_by_member` and one `trades_by_member` row per member it holds, by
    /// binary `COPY`.
    ///
    /// Errors: [`TradingError::Database`].
    async fn write(self, conn: &mut PgConnection, market: &str) -> Result<(), TradingError> {
        for (table, members) in [
            ("orders_by_member", self.orders),
            ("trades_by_member", self.trades),
        ] {
            if members.0.is_empty() {
                continue;
            }
            let statement = format!(
                "COPY {table} (member_number, last_id, market, ids) FROM STDIN (FORMAT binary)"
            );
            copy_in(conn, &statement, members.rows(market)).await?;
        }
        Ok(())
    }
}

/// New states of orders that already have a row, as columns for one `UPDATE … FROM UNNEST`
/// (amounts as decimal text of base units).
#[derive(Default)]
struct OrderUpdates {
    ids: Vec<i64>,
    filled: Vec<String>,
    filled_quote: Vec<String>,
    holds: Vec<String>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<String>>,
    updated: Vec<time::OffsetDateTime>,
}

impl OrderUpdates {
    fn push(&mut self, order: OrderUnits) {
        self.ids.push(i64_of(order.id));
        self.filled.push(order.filled.to_string());
        self.filled_quote.push(order.filled_quote.to_string());
        self.holds.push(order.hold.to_string());
        self.statuses.push(order.status.as_str());
        self.reasons.push(order.reason);
        self.updated.push(outcome::time_of_micros(order.updated_at));
    }

    /// Applies the updates to `market`'s rows.
    ///
    /// Errors: [`TradingError::Database`], also when an order has no row.
    async fn apply(self, conn: &mut PgConnection, market: &str) -> Result<(), TradingError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let updated = sqlx::query(
            "UPDATE orders o SET filled = u.filled::numeric, filled_quote = u.filled_quote::numeric,
                    hold = u.hold::numeric, status = u.status, reason = u.reason,
                    updated_at = u.updated_at
               FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::timestamptz[])
                 AS u(id, filled, filled_quote, hold, status, reason, updated_at)
              WHERE o.id = u.id AND o.market = $8",
        )
        .bind(&self.ids)
        .bind(&self.filled)
        .bind(&self.filled_quote)
        .bind(&self.holds)
        .bind(&self.statuses)
        .bind(&self.reasons)
        .bind(&self.updated)
        .bind(market)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated != self.ids.len() as u64 {
            return Err(TradingError::Database(format!(
                "projecting {market}: updated {updated} of {} earlier orders; the others have no row",
                self.ids.len()
            )));
        }
        Ok(())
    }
}

/// Runs `statement` (a binary `COPY ... FROM STDIN`) with `rows` inside the caller's
/// transaction.
async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    rows: BinaryRows,
) -> Result<(), TradingError> {
    let mut copy = conn.copy_in_raw(statement).await?;
    if let Err(error) = copy.send(rows.finish()).await {
        let _ = copy.abort(error.to_string()).await;
        return Err(error.into());
    }
    copy.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::last_states;
    use crate::trading::outcome::{OutcomeOrder, sample_order};

    /// Order `id`'s state with `filled` base units filled, as batch `seq` left it.
    fn state(id: u64, seq: u64, filled: u128) -> OutcomeOrder {
        let mut state = sample_order();
        state.seq = seq;
        state.order.id = id;
        state.order.filled = filled;
        state
    }

    /// A projection writes each order once, in the state of the last batch that changed it,
    /// and the orders by id, whatever batches they came from.
    #[test]
    fn last_states_keep_each_orders_latest_state_by_id() {
        // Three batches, each by id as the engine encodes them: order 2 placed in the first,
        // filled in part in the second and further in the third; orders 1, 3 and 4 once each.
        let batches = vec![
            state(1, 9, 0),
            state(2, 10, 0),
            state(3, 11, 0),
            state(2, 10, 1_000),
            state(4, 13, 0),
            state(2, 10, 3_000),
        ];
        let last: Vec<(u64, u128)> = last_states(batches)
            .iter()
            .map(|s| (s.order.id, s.order.filled))
            .collect();
        assert_eq!(last, [(1, 0), (2, 3_000), (3, 0), (4, 0)]);
    }
}
