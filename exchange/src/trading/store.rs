//! The trading tables in PostgreSQL: the command log, reading orders and trades (read models
//! written by `projection.rs`), and writing a settled batch (its command log row, netted
//! ledger transfer and outcome row) inside the caller's transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use coinhub_events::BaseUnits;
use coinhub_matcher::Command;
use sqlx::{Executor as _, PgConnection, PgPool, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

#[cfg(doc)]
use super::accounts::AccountIds;
use super::engine::Batch;
use super::funds::{Available, Change, slot};
use super::outcome::{self, OrderUnits};
use super::{
    EventsSink, MemberId, OrderKind, OrderView, Side, TimeInForce, TradeView, TradingError,
};
use crate::journal::JournalError;
use crate::ledger::{AccountKey, Leg, Transfer};
use crate::markets::Market;

/// Kind of the netted transfer that settles one batch of commands.
pub const TRADE_SETTLEMENT: &str = "trade_settlement";

/// An order as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderRow {
    pub(crate) id: u64,
    pub(crate) member: MemberId,
    pub(crate) side: Side,
    pub(crate) kind: OrderKind,
    pub(crate) price_ticks: Option<u64>,
    pub(crate) quantity_lots: Option<u64>,
    /// Budget of a market buy by quote, in ticks × lots.
    pub(crate) quote_budget: Option<u64>,
    pub(crate) time_in_force: Option<TimeInForce>,
    pub(crate) client_order_id: Option<String>,
    pub(crate) filled_lots: u64,
    /// Quote base units exchanged.
    pub(crate) filled_quote: u128,
    /// Still locked, base units of the base asset if `hold_base`, else of the quote asset.
    pub(crate) hold: u128,
    pub(crate) hold_base: bool,
    pub(crate) status: &'static str,
    pub(crate) reason: Option<String>,
    pub(crate) seq: u64,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
}

impl OrderRow {
    /// Lots not yet filled (0 for a market buy by quote).
    pub(crate) fn remaining_lots(&self) -> u64 {
        self.quantity_lots.map_or(0, |lots| {
            lots.checked_sub(self.filled_lots)
                .expect("filled ≤ quantity")
        })
    }

    /// The order as members see it (amounts in base units, times in RFC 3339).
    pub(crate) fn view(&self, market: &Market) -> OrderView {
        OrderUnits::of(self, market).view(&market.name, market.base.as_str(), market.quote.as_str())
    }
}

/// A settled trade, in the market of the batch that holds it (whose quote asset its fees
/// are in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TradeRow {
    pub(crate) id: u64,
    pub(crate) seq: u64,
    pub(crate) ordinal: u32,
    pub(crate) price: u128,
    pub(crate) quantity: u128,
    pub(crate) quote_quantity: u128,
    pub(crate) maker_order_id: u64,
    pub(crate) taker_order_id: u64,
    pub(crate) maker_member: MemberId,
    pub(crate) taker_member: MemberId,
    pub(crate) taker_side: Side,
    pub(crate) maker_fee: u128,
    pub(crate) taker_fee: u128,
    pub(crate) created_at: OffsetDateTime,
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("a timestamp from the clock or the database formats")
}

/// An order, trade or command id or sequence number as its `BIGINT` column holds it: the
/// engine hands them out from 1 up, so they stay below 2^63.
pub(crate) fn i64_of(value: u64) -> i64 {
    i64::try_from(value).expect("ids and sequence numbers stay below 2^63")
}

fn u64_of(value: i64) -> Result<u64, TradingError> {
    u64::try_from(value).map_err(|_| TradingError::Database(format!("negative id {value}")))
}

fn u128_of(text: &str) -> Result<u128, TradingError> {
    text.parse()
        .map_err(|_| TradingError::Database(format!("stored amount {text} does not fit u128")))
}

fn steps(value: u128, step: u128) -> Result<u64, TradingError> {
    if !value.is_multiple_of(step) {
        return Err(TradingError::Database(format!(
            "stored amount {value} is not a multiple of {step}; market parameters changed"
        )));
    }
    u64::try_from(value / step)
        .map_err(|_| TradingError::Database("stored amount too large".into()))
}

/// Traces how long batch `first_seq`'s write has taken when `phase` ends (batches are
/// written two at a time, so their lines interleave).
fn trace_phase(first_seq: u64, phase: &str, started: std::time::Instant) {
    tracing::trace!(
        first_seq,
        phase,
        elapsed_us = started.elapsed().as_micros(),
        "write_batch"
    );
}

/// Writes `transfer`'s entries like [`crate::journal::post`] (same tables, same statement
/// trigger, same checks) but in a few statements whatever its size, and **without applying
/// them to the balances yet** ([`apply_staged`] does, later in the same transaction): the
/// transfer row ([`insert_transfer`], written earlier), every entry
/// in one `INSERT … SELECT FROM UNNEST` in account-id order under `SET LOCAL
/// coinhub.ledger_apply = 'deferred'` (migration 0016: the entries' trigger checks them and
/// queues one `ledger_unapplied` row), then the transfer's deferred balance checks at once
/// (`SET CONSTRAINTS … IMMEDIATE`). None of it locks an account, so it runs before the batch
/// ahead commits; a settlement touches hundreds of accounts, and [`crate::journal::post`]
/// pays two to three round trips per leg.
///
/// Errors: [`JournalError::Unbalanced`] (the engine builds balanced transfers; this is the
/// database's safety net), the database's. A batch's transfer reference is new, so it never
/// returns `AlreadyPosted`.
async fn stage_netted(
    conn: &mut PgConnection,
    accounts: &HashMap<&AccountKey, i64>,
    transfer: &Transfer,
) -> Result<(), JournalError> {
    let mut entries: Vec<(i64, String)> = transfer
        .legs()
        .iter()
        .map(|leg| {
            let id = accounts
                .get(&leg.account)
                .expect("every changed account was resolved before the transaction");
            (*id, leg.signed_amount().to_string())
        })
        .collect();
    entries.sort_by_key(|(id, _)| *id);
    let (account_ids, amounts): (Vec<i64>, Vec<String>) = entries.into_iter().unzip();
    // (A query without arguments goes over the simple protocol, which allows utility
    // statements.)
    (&mut *conn)
        .execute("SET LOCAL coinhub.ledger_apply = 'deferred'")
        .await?;
    sqlx::query(
        "INSERT INTO entries (transfer_id, account_id, amount)
         SELECT $1, a, m::numeric FROM UNNEST($2::bigint[], $3::text[]) WITH ORDINALITY AS t(a, m, o)
          ORDER BY o",
    )
    .bind(transfer.id())
    .bind(&account_ids)
    .bind(&amounts)
    .execute(&mut *conn)
    .await?;
    (&mut *conn)
        .execute("SET CONSTRAINTS transfers_balanced, entries_balanced IMMEDIATE")
        .await?;
    Ok(())
}

/// Applies the entries [`stage_netted`] wrote to the balances: deleting the transfer's
/// `ledger_unapplied` row applies the net change per account it carries, in one `UPDATE` that
/// locks the accounts in id order and refuses a balance below zero (migrations 0016, 0025,
/// 0026). The only part of a batch's write that waits for the batch ahead to commit (its
/// accounts' row locks), then `COMMIT`.
///
/// Errors: [`JournalError::InsufficientBalance`] (a balance went below zero), the database's.
async fn apply_staged(conn: &mut PgConnection, transfer: &Transfer) -> Result<(), JournalError> {
    sqlx::query("DELETE FROM ledger_unapplied WHERE transfer_id = $1")
        .bind(transfer.id())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The row of `transfer` in `transfers`, before its entries ([`stage_netted`]).
///
/// Errors: the database's.
async fn insert_transfer(conn: &mut PgConnection, transfer: &Transfer) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO transfers (id, kind, reference) VALUES ($1, $2, $3)")
        .bind(transfer.id())
        .bind(transfer.kind())
        .bind(transfer.reference())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The largest order and trade ids so far (0 when none).
pub(crate) async fn max_ids(pool: &PgPool) -> Result<(u64, u64), TradingError> {
    let (order, trade): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(max(id), 0) FROM orders), (SELECT coalesce(max(id), 0) FROM trades)",
    )
    .fetch_one(pool)
    .await?;
    Ok((u64_of(order)?, u64_of(trade)?))
}

/// Records `market`, or checks it matches what its history was written with.
pub(crate) async fn record_market(pool: &PgPool, market: &Market) -> Result<(), TradingError> {
    sqlx::query(
        "INSERT INTO trading_markets (name, base, quote, tick_size, lot_size)
         VALUES ($1, $2, $3, $4::numeric, $5::numeric) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&market.name)
    .bind(market.base.as_str())
    .bind(market.quote.as_str())
    .bind(market.tick_size.to_string())
    .bind(market.lot_size.to_string())
    .execute(pool)
    .await?;
    let (base, quote, tick, lot): (String, String, String, String) = sqlx::query_as(
        "SELECT base, quote, tick_size::text, lot_size::text FROM trading_markets WHERE name = $1",
    )
    .bind(&market.name)
    .fetch_one(pool)
    .await?;
    let recorded = (base.as_str(), quote.as_str(), tick, lot);
    let configured = (
        market.base.as_str(),
        market.quote.as_str(),
        market.tick_size.to_string(),
        market.lot_size.to_string(),
    );
    if recorded != configured {
        return Err(TradingError::InvalidQuantity(format!(
            "invalid config key `markets.{}`: base, quote, tick_size and lot_size cannot change \
             once the market has history (recorded {recorded:?})",
            market.name
        )));
    }
    super::projection::record_market(pool, &market.name).await?;
    Ok(())
}

/// The matcher's number for `member`, assigned on first use.
pub(crate) async fn member_number(pool: &PgPool, member: &MemberId) -> Result<u64, TradingError> {
    sqlx::query("INSERT INTO trading_members (member_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(member.as_str())
        .execute(pool)
        .await?;
    let number: i64 = sqlx::query_scalar("SELECT number FROM trading_members WHERE member_id = $1")
        .bind(member.as_str())
        .fetch_one(pool)
        .await?;
    u64_of(number)
}

/// The command log of `market` after command `after`, in order, as (seq, command).
///
/// Errors: [`TradingError::Database`], also for a stored batch whose line count does not match
/// its seq range or that does not parse.
pub(crate) async fn load_commands(
    pool: &PgPool,
    market: &str,
    after: u64,
) -> Result<Vec<(u64, Command)>, TradingError> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT first_seq, last_seq, commands FROM trading_command_batches
          WHERE market = $1 AND last_seq > $2 ORDER BY first_seq",
    )
    .bind(market)
    .bind(i64_of(after))
    .fetch_all(pool)
    .await?;
    let mut commands = Vec::new();
    for (first, last, text) in rows {
        let (first, last) = (u64_of(first)?, u64_of(last)?);
        let before = commands.len();
        for (line, seq) in text.lines().zip(first..) {
            let command = serde_json::from_str(line)
                .map_err(|e| TradingError::Database(format!("command {market}/{seq}: {e}")))?;
            commands.push((seq, command));
        }
        if u64::try_from(commands.len() - before).ok() != Some(last - first + 1) {
            return Err(TradingError::Database(format!(
                "command batch {market}/{first}-{last} holds {} commands",
                commands.len() - before
            )));
        }
    }
    Ok(commands)
}

const ORDER_COLUMNS: &str = "id, market, member_id, side, kind, price::text AS price,
    quantity::text AS quantity, quote_amount::text AS quote_amount, time_in_force,
    client_order_id, filled::text AS filled, filled_quote::text AS filled_quote,
    hold::text AS hold, hold_asset, status, reason, seq, created_at, updated_at";

fn order_from_row(row: &sqlx::postgres::PgRow, market: &Market) -> Result<OrderRow, TradingError> {
    let text = |name: &str| -> Result<Option<String>, TradingError> { Ok(row.try_get(name)?) };
    let corrupt = |what: &str| TradingError::Database(format!("corrupt order row: {what}"));
    let side = match row.try_get::<String, _>("side")?.as_str() {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => return Err(corrupt(other)),
    };
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "limit" => OrderKind::Limit,
        "market" => OrderKind::Market,
        other => return Err(corrupt(other)),
    };
    let time_in_force = match text("time_in_force")?.as_deref() {
        None => None,
        Some("gtc") => Some(TimeInForce::Gtc),
        Some("ioc") => Some(TimeInForce::Ioc),
        Some("fok") => Some(TimeInForce::Fok),
        Some("post_only") => Some(TimeInForce::PostOnly),
        Some(other) => return Err(corrupt(other)),
    };
    let status = match row.try_get::<String, _>("status")?.as_str() {
        "open" => "open",
        "filled" => "filled",
        "cancelled" => "cancelled",
        "rejected" => "rejected",
        other => return Err(corrupt(other)),
    };
    let optional_steps = |name: &str, step: u128| -> Result<Option<u64>, TradingError> {
        text(name)?
            .map(|v| u128_of(&v).and_then(|v| steps(v, step)))
            .transpose()
    };
    let member: String = row.try_get("member_id")?;
    Ok(OrderRow {
        id: u64_of(row.try_get("id")?)?,
        member: member.parse().map_err(|e: String| corrupt(&e))?,
        side,
        kind,
        price_ticks: optional_steps("price", market.tick_size)?,
        quantity_lots: optional_steps("quantity", market.lot_size)?,
        quote_budget: optional_steps("quote_amount", market.tick_size)?,
        time_in_force,
        client_order_id: text("client_order_id")?,
        filled_lots: steps(
            u128_of(&row.try_get::<String, _>("filled")?)?,
            market.lot_size,
        )?,
        filled_quote: u128_of(&row.try_get::<String, _>("filled_quote")?)?,
        hold: u128_of(&row.try_get::<String, _>("hold")?)?,
        hold_base: side == Side::Sell,
        status,
        reason: text("reason")?,
        seq: u64_of(row.try_get("seq")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The orders of `market` with these ids (any status), by id.
///
/// Errors: [`TradingError::Database`], also when an id has no row in `market`.
pub(crate) async fn load_orders_by_id(
    pool: &PgPool,
    market: &Market,
    ids: &[u64],
) -> Result<Vec<OrderRow>, TradingError> {
    let ids: Vec<i64> = ids.iter().copied().map(i64_of).collect();
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) AND market = $2 ORDER BY id"
    ))
    .bind(&ids)
    .bind(&market.name)
    .fetch_all(pool)
    .await?;
    if rows.len() != ids.len() {
        return Err(TradingError::Database(format!(
            "{} of {} resting orders of {} have no row in `orders`",
            ids.len() - rows.len(),
            ids.len(),
            market.name
        )));
    }
    rows.iter().map(|row| order_from_row(row, market)).collect()
}

/// `member`'s orders, newest first (found through `orders_by_member`, 0030: [`newest_ids`]).
pub(crate) async fn load_orders(
    pool: &PgPool,
    member: &MemberId,
    market: Option<&str>,
    limit: u32,
    lookup: impl Fn(&str) -> Option<Arc<Market>>,
) -> Result<Vec<OrderView>, TradingError> {
    let ids = newest_ids(pool, Postings::Orders, member, market, limit).await?;
    let rows = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) ORDER BY id DESC"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: String = row.try_get("market")?;
        // Orders of a market no longer configured are not shown.
        if let Some(market) = lookup(&name) {
            views.push(order_from_row(row, &market)?.view(&market));
        }
    }
    Ok(views)
}

/// `member`'s trades, newest first (found through `trades_by_member`, 0030: [`newest_ids`]).
pub(crate) async fn load_trades(
    pool: &PgPool,
    member: &MemberId,
    market: Option<&str>,
    limit: u32,
) -> Result<Vec<TradeView>, TradingError> {
    let ids = newest_ids(pool, Postings::Trades, member, market, limit).await?;
    let rows = sqlx::query(
        "SELECT id, market, price::text AS price, quantity::text AS quantity,
                quote_quantity::text AS quote_quantity, maker_order_id, taker_order_id,
                maker_member, taker_side, maker_fee::text AS maker_fee,
                taker_fee::text AS taker_fee, fee_asset, created_at
           FROM trades WHERE id = ANY($1) ORDER BY id DESC",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let maker = row.try_get::<String, _>("maker_member")? == member.as_str();
            let side = match row.try_get::<String, _>("taker_side")?.as_str() {
                "buy" => Side::Buy,
                _ => Side::Sell,
            };
            Ok(TradeView {
                id: u64_of(row.try_get("id")?)?,
                market: row.try_get("market")?,
                price: row.try_get("price")?,
                quantity: row.try_get("quantity")?,
                quote_quantity: row.try_get("quote_quantity")?,
                maker_order_id: u64_of(row.try_get("maker_order_id")?)?,
                taker_order_id: u64_of(row.try_get("taker_order_id")?)?,
                side,
                fee: row.try_get(if maker { "maker_fee" } else { "taker_fee" })?,
                fee_asset: row.try_get("fee_asset")?,
                liquidity: if maker { "maker" } else { "taker" }.to_owned(),
                created_at: rfc3339(row.try_get("created_at")?),
            })
        })
        .collect()
}

/// A member's posting lists of one read model (migration 0030): one row per projection and
/// market that wrote the member's orders (trades), holding their ids.
#[derive(Clone, Copy)]
enum Postings {
    Orders,
    Trades,
}

impl Postings {
    fn table(self) -> &'static str {
        match self {
            Postings::Orders => "orders_by_member",
            Postings::Trades => "trades_by_member",
        }
    }
}

/// Posting rows a reader takes per round trip.
const POSTING_ROWS_PER_READ: i64 = 64;

/// The ids of `member`'s newest `limit` orders or trades (in `market`, or in every market),
/// newest first: the member's posting rows are read by their largest id, descending, until no
/// later row can hold one of the newest `limit` ([`NewestIds`]). Empty for a member who never
/// traded.
///
/// Errors: [`TradingError::Database`].
async fn newest_ids(
    pool: &PgPool,
    postings: Postings,
    member: &MemberId,
    market: Option<&str>,
    limit: u32,
) -> Result<Vec<i64>, TradingError> {
    let mut newest = NewestIds::new(usize::try_from(limit).expect("u32 fits usize"));
    let mut before = i64::MAX;
    while !newest.is_full_below(before) {
        let rows: Vec<(i64, Vec<i64>)> = sqlx::query_as(&format!(
            "SELECT last_id, ids FROM {}
              WHERE member_number = (SELECT number FROM trading_members WHERE member_id = $1)
                AND ($2::text IS NULL OR market = $2) AND last_id < $3
              ORDER BY last_id DESC LIMIT $4",
            postings.table()
        ))
        .bind(member.as_str())
        .bind(market)
        .bind(before)
        .bind(POSTING_ROWS_PER_READ)
        .fetch_all(pool)
        .await?;
        let last_page = rows.len() < POSTING_ROWS_PER_READ as usize;
        for (last_id, ids) in rows {
            if newest.is_full_below(last_id) {
                return Ok(newest.ids);
            }
            newest.add(ids);
            before = last_id;
        }
        if last_page {
            break;
        }
    }
    Ok(newest.ids)
}

/// The largest `limit` ids of posting rows added in descending order of their largest id.
struct NewestIds {
    limit: usize,
    /// Descending, at most `limit`.
    ids: Vec<i64>,
}

impl NewestIds {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            ids: Vec::new(),
        }
    }

    /// Whether a row whose ids are all at most `last_id` (and every row after it) can add
    /// nothing: `limit` ids are held and all of them are above `last_id`.
    fn is_full_below(&self, last_id: i64) -> bool {
        self.ids.len() >= self.limit && self.ids.last().is_none_or(|&least| least > last_id)
    }

    fn add(&mut self, ids: Vec<i64>) {
        self.ids.extend(ids);
        self.ids.sort_unstable_by(|a, b| b.cmp(a));
        self.ids.truncate(self.limit);
    }
}

/// What [`read_balances`] returns: the members' available balances (`[quote, base]`, base
/// units), and the last command of the market whose batch had committed.
pub(crate) type Balances = (Available, u64);

/// The available balances of `members` in `market`'s base and quote assets (zero for a member
/// without an account), and the last command of `market` whose batch had committed
/// (`trading_command_batches.last_seq`, 0 for none), both read by one statement, so from one
/// snapshot: the caller knows whether the balances include a batch still being written.
///
/// Nothing is locked. A batch settled on these balances fails with
/// [`TradingError::Conflict`] if another writer lowered one of them meanwhile (the ledger's
/// non-negative check, in the batch's own transaction), and the engine runs it again.
///
/// Errors: [`TradingError::Database`], also for a stored balance that does not fit `u128`.
pub(crate) async fn read_balances(
    pool: &PgPool,
    market: &Market,
    members: &[MemberId],
) -> Result<Balances, TradingError> {
    let names: Vec<&str> = members.iter().map(MemberId::as_str).collect();
    // One row: the last committed command, and the accounts as three columns (member id,
    // whether the asset is the base, balance as decimal text; NULL when none has an account
    // yet). Arrays, not a row per account: decoding a row is most of reading it.
    type BalanceColumns = (
        i64,
        Option<Vec<String>>,
        Option<Vec<bool>>,
        Option<Vec<String>>,
    );
    let (committed, owners, is_base, balances): BalanceColumns = sqlx::query_as(
        "SELECT (SELECT coalesce(max(last_seq), 0) FROM trading_command_batches
                  WHERE market = $4),
                array_agg(member_id::text), array_agg(asset = $2), array_agg(balance::text)
           FROM accounts
          WHERE member_id = ANY($1) AND asset IN ($2, $3) AND kind = 'available'",
    )
    .bind(&names)
    .bind(market.base.as_str())
    .bind(market.quote.as_str())
    .bind(&market.name)
    .fetch_one(pool)
    .await?;
    let mut available: Available = members
        .iter()
        .map(|member| (member.clone(), [0, 0]))
        .collect();
    let (owners, is_base, balances) = (
        owners.unwrap_or_default(),
        is_base.unwrap_or_default(),
        balances.unwrap_or_default(),
    );
    if owners.len() != is_base.len() || owners.len() != balances.len() {
        return Err(TradingError::Database(format!(
            "balance columns of unequal lengths: {} members, {} assets, {} balances",
            owners.len(),
            is_base.len(),
            balances.len()
        )));
    }
    for ((owner, base), balance) in owners.iter().zip(is_base).zip(&balances) {
        let slots = available.get_mut(owner.as_str()).ok_or_else(|| {
            TradingError::Database(format!("balance of {owner:?}, who was not asked for"))
        })?;
        slots[slot(base)] = u128_of(balance)?;
    }
    let committed = u64_of(committed)?;
    Ok((available, committed))
}

/// Writes a settled batch inside the caller's transaction, in two parts:
///
/// 1. rows no earlier batch's transaction can hold up: the command log row, the ledger
///    transfer's row and its entries, checked but not yet applied to the balances
///    ([`stage_netted`]), and the batch's outcome row (`trading_event_batches`, form 3: its
///    `exchange.events` messages and the source of its `orders` and `trades` rows, which
///    `projection.rs` writes after the commit);
/// 2. after `after` resolves (the previous batch's transaction committed; batches are written
///    concurrently, committed in order): the entries are applied to the balances
///    ([`apply_staged`]; their accounts may be locked by the previous batch). One statement,
///    then `COMMIT`: this part runs one batch at a time.
///
/// `accounts` holds the ledger account id of every account in the batch's changes
/// ([`AccountIds::resolve`], before the transaction). With `events` [`EventsSink::Disabled`] the outcome row is still written (the projection
/// reads it), marked published.
///
/// Errors: [`TradingError::Conflict`] when a balance went below zero (another writer lowered
/// it after the batch read it) or `after` fails (the batch ran on top of one that did not
/// commit); [`TradingError::Database`].
pub(crate) async fn write_batch(
    conn: &mut PgConnection,
    market: &Arc<Market>,
    batch: &Arc<Batch>,
    changes: &BTreeMap<AccountKey, Change>,
    accounts: &HashMap<&AccountKey, i64>,
    events: EventsSink,
    after: impl std::future::Future<Output = Result<(), TradingError>>,
) -> Result<(), TradingError> {
    if batch.commands.is_empty() {
        assert!(batch.changes.is_empty(), "no command, no ledger change");
        return after.await;
    }
    let phase_start = std::time::Instant::now();
    let first = batch.commands.first().expect("not empty").0;
    let last = batch.commands.last().expect("not empty").0;
    let transfer = settlement_transfer(market, changes, first, last)?;
    // The outcome is encoded on a blocking thread while PostgreSQL takes the rows below
    // (the two would otherwise take turns).
    let encoding = {
        let (market, batch) = (market.clone(), batch.clone());
        let transfer_id = transfer.as_ref().map(Transfer::id);
        tokio::task::spawn_blocking(move || {
            // By id: the outcome's orders, their messages and the projection's rows in the
            // order the orders were placed.
            let mut orders: Vec<&OrderRow> = batch.orders.values().collect();
            orders.sort_unstable_by_key(|order| order.id);
            outcome::encode(&market, &batch.trades, orders, batch.now, transfer_id)
        })
    };
    insert_commands(conn, market, batch, first, last).await?;
    if let Some(transfer) = &transfer {
        insert_transfer(conn, transfer).await?;
        stage_netted(conn, accounts, transfer)
            .await
            .map_err(|error| journal_error("staging the settlement's entries", error))?;
    }
    trace_phase(first, "commands", phase_start);
    let (outcome, count) = encoding
        .await
        .map_err(|e| TradingError::Database(format!("encoding the batch's outcome: {e}")))?;
    if count > 0 {
        let publish = events == EventsSink::Outbox;
        super::events::insert_batch(conn, &market.name, (first, last), &outcome, count, publish)
            .await?;
    }
    trace_phase(first, "outcome", phase_start);
    after.await?;
    trace_phase(first, "previous_committed", phase_start);
    if let Some(transfer) = &transfer {
        apply_staged(conn, transfer)
            .await
            .map_err(|error| journal_error("applying the settlement", error))?;
    }
    trace_phase(first, "ledger", phase_start);
    Ok(())
}

/// `error` of a settlement's ledger step `what` as the engine's error: a balance that went
/// below zero is a [`TradingError::Conflict`] (the batch runs again).
fn journal_error(what: &str, error: JournalError) -> TradingError {
    match error {
        JournalError::InsufficientBalance { account } => TradingError::Conflict(format!(
            "settlement would take {account} below zero (changed by a concurrent transaction \
             since the batch read it)"
        )),
        JournalError::Database(error) => error.into(),
        error => TradingError::Database(format!("{what}: {error}")),
    }
}

/// The command log: one row, one JSON command per line.
async fn insert_commands(
    conn: &mut PgConnection,
    market: &Market,
    batch: &Batch,
    first: u64,
    last: u64,
) -> Result<(), TradingError> {
    let mut lines = String::with_capacity(batch.commands.len() * 128);
    for (_, command) in &batch.commands {
        lines.push_str(&serde_json::to_string(command).expect("commands serialize"));
        lines.push('\n');
    }
    sqlx::query(
        "INSERT INTO trading_command_batches (market, first_seq, last_seq, commands)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&market.name)
    .bind(i64_of(first))
    .bind(i64_of(last))
    .bind(&lines)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The ledger transfer of the batch of commands `first ..= last`: the net change of each
/// account in `changes` (`None` when it nets to zero).
fn settlement_transfer(
    market: &Market,
    changes: &BTreeMap<AccountKey, Change>,
    first: u64,
    last: u64,
) -> Result<Option<Transfer>, TradingError> {
    let mut legs = Vec::new();
    let mut per_asset: HashMap<&str, i128> = HashMap::new();
    for (account, (credits, debits)) in changes {
        let sum = per_asset.entry(account.asset().as_str()).or_default();
        // Every trading account is credit-normal: + credit raises it.
        if credits > debits {
            *sum -= i128::try_from(credits - debits).expect("net change fits i128");
            legs.push(Leg::credit(
                account.clone(),
                BaseUnits::from(credits - debits),
            ));
        } else if debits > credits {
            *sum += i128::try_from(debits - credits).expect("net change fits i128");
            legs.push(Leg::debit(
                account.clone(),
                BaseUnits::from(debits - credits),
            ));
        }
    }
    assert!(
        per_asset.values().all(|sum| *sum == 0),
        "a settled batch balances per asset: {per_asset:?}"
    );
    if legs.len() < 2 {
        assert!(legs.is_empty(), "a single leg cannot balance");
        return Ok(None);
    }
    // Time-ordered (RFC 9562 UUID version 7), so each settlement's entries go to the right
    // end of `entries`' primary key (transfer_id, id), where PostgreSQL appends without
    // searching the tree; a random (version 4) id put every one of them at a random place.
    Transfer::new(
        Uuid::now_v7(),
        TRADE_SETTLEMENT,
        &format!("{}:{first}-{last}", market.name),
        legs,
    )
    .map(Some)
    .map_err(|e| TradingError::Database(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{NewestIds, settlement_transfer};
    use crate::ledger::{AccountKey, Side};
    use crate::markets::sample_market;
    use coinhub_events::BaseUnits;

    /// A batch's transfer has one leg per account that changed, by its net change (an account
    /// credited and debited alike has none), and its id is a UUID version 7: a later batch's
    /// sorts after an earlier one's, so its entries go to the right end of `entries`' key.
    #[test]
    fn settlement_transfers_net_per_account_and_sort_by_time() {
        let market = sample_market();
        let (btc, usdt) = (market.base.clone(), market.quote.clone());
        let member = |id: &str| id.parse().expect("member id");
        let alice_locked = AccountKey::locked(member("alice"), usdt.clone());
        let bob_available = AccountKey::available(member("bob"), usdt.clone());
        let fees = AccountKey::fee_revenue(usdt);
        let changes = BTreeMap::from([
            (alice_locked.clone(), (100, 191)),
            (bob_available.clone(), (90, 0)),
            (AccountKey::locked(member("carol"), btc), (7, 7)),
            (fees.clone(), (1, 0)),
        ]);
        let first = settlement_transfer(&market, &changes, 1, 2)
            .expect("balances")
            .expect("not netted away");
        let expected = [
            (alice_locked, Side::Debit, 91_u128),
            (bob_available, Side::Credit, 90),
            (fees, Side::Credit, 1),
        ];
        assert_eq!(first.legs().len(), expected.len(), "{:?}", first.legs());
        for (account, side, amount) in expected {
            let leg = first.legs().iter().find(|leg| leg.account == account);
            assert_eq!(
                leg.map(|leg| (leg.side, &leg.amount)),
                Some((side, &BaseUnits::from(amount))),
                "{account:?}"
            );
        }
        assert_eq!(first.id().get_version_num(), 7);
        let second = settlement_transfer(&market, &changes, 3, 4)
            .expect("balances")
            .expect("not netted away");
        assert!(
            second.id() > first.id(),
            "{} then {}",
            first.id(),
            second.id()
        );
    }

    /// Posting rows come by their largest id, descending, but rows of different markets
    /// overlap: the newest ids are merged across rows, and reading stops only once no later
    /// row can hold one of them.
    #[test]
    fn newest_ids_merge_overlapping_rows_and_stop_when_none_can_follow() {
        let mut newest = NewestIds::new(3);
        assert!(!newest.is_full_below(i64::MAX), "nothing held yet");
        newest.add(vec![10, 40, 50]); // one market's row: largest 50
        assert!(!newest.is_full_below(45), "a row up to 45 may beat 10");
        newest.add(vec![20, 30, 45]); // another market's, overlapping: largest 45
        assert_eq!(newest.ids, [50, 45, 40]);
        assert!(!newest.is_full_below(41), "a row up to 41 may hold 41");
        assert!(newest.is_full_below(39), "a row up to 39 cannot beat 40");
        assert!(
            NewestIds::new(0).is_full_below(i64::MAX),
            "a limit of 0 reads nothing"
        );
    }
}
