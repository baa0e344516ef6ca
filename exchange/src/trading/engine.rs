//! The engine: one task per market owns the book and settles batches of commands.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use coinhub_matcher::{
    BookSnapshot, CancelReason, Command, Depth, Event, Market as MatcherMarket,
    MemberId as MatcherMember, OrderBook, OrderId, OrderKind as MatcherKind, RejectReason,
    Side as MatcherSide, TimeInForce as MatcherTif,
};
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::accounts::AccountIds;
use super::funds::{Available, BASE, Changes, Held, QUOTE, slot};
use super::outcome::OrderUnits;
use super::projection;
use super::snapshot;
use super::store::{self, OrderRow, TradeRow};
use super::{
    DepthView, EventsSink, MarketView, MemberId, NewOrder, OrderKind, OrderView, Side, TimeInForce,
    TradeView, TradingError,
};
use crate::ledger::AssetSymbol;
use crate::markets::{Market, MarketsConfig};
use crate::metrics::{BatchFailure, Metrics};

/// Most commands settled in one database transaction.
pub const BATCH_MAX: usize = 4_096;
/// Commands that may wait for a market's task.
const QUEUE_MAX: usize = 65_536;
/// Deepest depth view kept per market.
const DEPTH_LEVELS_MAX: usize = 1_000;
/// Longest history page.
const PAGE_MAX: u32 = 1_000;

/// The trading service. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct TradingEngine {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    markets: BTreeMap<String, MarketHandle>,
    members: Mutex<FxHashMap<String, u64>>,
}

struct MarketHandle {
    market: Arc<Market>,
    requests: mpsc::Sender<Request>,
    depth: Arc<RwLock<Depth>>,
    rebuild: BookRebuild,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where trades and order updates go.
    pub events: EventsSink,
    /// Commands of a market between two book snapshots (a restart replays at most about this
    /// many commands per market); at least 1.
    pub snapshot_every: u64,
    /// Where settled and failed batches are counted (`None`: nowhere).
    pub metrics: Option<Metrics>,
}

impl EngineOptions {
    /// Events to `events`, a snapshot every [`snapshot::SNAPSHOT_EVERY_DEFAULT`] commands, no
    /// metrics.
    pub fn new(events: EventsSink) -> Self {
        Self {
            events,
            snapshot_every: snapshot::SNAPSHOT_EVERY_DEFAULT,
            metrics: None,
        }
    }

    /// These options, counting batches in `metrics` (`/metrics`, see [`crate::metrics`]).
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }
}

/// How a market's book was rebuilt when the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookRebuild {
    /// The last command of the snapshot it started from; `None`: replayed from the start.
    pub snapshot_seq: Option<u64>,
    /// Commands replayed after the snapshot.
    pub replayed_commands: u64,
    /// Resting orders after the rebuild.
    pub open_orders: usize,
}

/// An order checked against its market, ready for the book.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) side: Side,
    pub(crate) kind: OrderKind,
    pub(crate) matcher_kind: MatcherKind,
    pub(crate) time_in_force: Option<TimeInForce>,
    pub(crate) client_order_id: Option<String>,
}

/// What a market's task is asked: a command to settle, or a read of its open orders.
enum Request {
    Command(CommandRequest),
    /// `member`'s open orders in this market, newest first, answered after the batch it
    /// arrived in has committed.
    OpenOrders {
        member: MemberId,
        reply: oneshot::Sender<Vec<OrderView>>,
    },
}

/// A command and where its outcome goes.
struct CommandRequest {
    command: MemberCommand,
    reply: oneshot::Sender<Outcome>,
}

/// A member's command, kept until its batch commits so a batch that lost a conflict can run
/// again.
#[derive(Clone)]
enum MemberCommand {
    Place {
        member: MemberId,
        number: u64,
        order: Checked,
    },
    Cancel {
        member: MemberId,
        number: u64,
        order_id: u64,
    },
}

impl MemberCommand {
    fn member(&self) -> &MemberId {
        match self {
            Self::Place { member, .. } | Self::Cancel { member, .. } => member,
        }
    }
}

/// How often a batch is run again after losing a conflict with a concurrent transaction
/// (deadlock, serialization failure, a balance another writer lowered meanwhile).
const CONFLICT_ATTEMPTS: u32 = 3;

impl TradingEngine {
    /// [`Self::start_with`] with events to `events` and the default snapshot interval.
    ///
    /// Errors: as [`Self::start_with`].
    pub async fn start(
        pool: PgPool,
        markets: MarketsConfig,
        events: EventsSink,
    ) -> Result<Self, TradingError> {
        Self::start_with(pool, markets, EngineOptions::new(events)).await
    }

    /// Checks the markets, records them (refusing a changed tick or lot size), rebuilds every
    /// book from its newest snapshot and the commands logged after it
    /// (`trading_book_snapshots`, `trading_command_batches`), and starts one task per market.
    ///
    /// Errors: [`TradingError::InvalidQuantity`] for a bad or changed market table;
    /// [`TradingError::Database`].
    pub async fn start_with(
        pool: PgPool,
        markets: MarketsConfig,
        options: EngineOptions,
    ) -> Result<Self, TradingError> {
        let markets = markets
            .checked()
            .map_err(|e| TradingError::InvalidQuantity(e.to_string()))?;
        let ids = Arc::new(IdSource {
            next_order_id: AtomicU64::new(0),
            next_trade_id: AtomicU64::new(0),
        });
        for market in markets.values() {
            store::record_market(&pool, market).await?;
        }
        // Batches committed before a crash may not be in `orders` and `trades` yet; the ids
        // below are read from there.
        projection::catch_up_all(&pool).await?;
        let (max_order, max_trade) = store::max_ids(&pool).await?;
        ids.next_order_id.store(max_order + 1, Ordering::SeqCst);
        ids.next_trade_id.store(max_trade + 1, Ordering::SeqCst);
        let accounts = Arc::new(AccountIds::default());
        let (projector, committed) = mpsc::channel(1);
        tokio::spawn(projection::run(
            pool.clone(),
            markets.keys().cloned().collect(),
            committed,
        ));
        let mut handles = BTreeMap::new();
        for (name, market) in markets {
            let market = Arc::new(market);
            let state = MarketState::load(&pool, market.clone()).await?;
            let depth = Arc::new(RwLock::new(state.book.depth(DEPTH_LEVELS_MAX)));
            let (sender, receiver) = mpsc::channel(QUEUE_MAX);
            let rebuild = state.rebuild;
            let worker = Worker {
                pool: pool.clone(),
                state,
                ids: ids.clone(),
                accounts: accounts.clone(),
                options: options.clone(),
                depth: depth.clone(),
                projector: projector.clone(),
            };
            tokio::spawn(worker.run(receiver));
            tracing::info!(market = %name, "market open");
            handles.insert(
                name,
                MarketHandle {
                    market,
                    requests: sender,
                    depth,
                    rebuild,
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                markets: handles,
                members: Mutex::new(FxHashMap::default()),
            }),
        })
    }

    /// How `market`'s book was rebuilt at start (for operators: a long replay means
    /// snapshots are missing or far apart).
    ///
    /// Errors: [`TradingError::UnknownMarket`].
    pub fn book_rebuild(&self, market: &str) -> Result<BookRebuild, TradingError> {
        Ok(self.handle(market)?.rebuild)
    }

    fn handle(&self, market: &str) -> Result<&MarketHandle, TradingError> {
        self.inner
            .markets
            .get(market)
            .ok_or_else(|| TradingError::UnknownMarket(market.to_owned()))
    }

    async fn member_number(&self, member: &MemberId) -> Result<u64, TradingError> {
        if let Some(number) = self
            .inner
            .members
            .lock()
            .expect("member cache lock is never poisoned")
            .get(member.as_str())
        {
            return Ok(*number);
        }
        let number = store::member_number(&self.inner.pool, member).await?;
        self.inner
            .members
            .lock()
            .expect("member cache lock is never poisoned")
            .insert(member.as_str().to_owned(), number);
        Ok(number)
    }

    /// Places an order: checks it, locks its hold, matches it, settles its trades, and
    /// returns its state after matching (status `open` if it rests).
    ///
    /// Errors: the client errors of [`TradingError`] (nothing is locked then; a
    /// [`TradingError::Rejected`] order is recorded with status `rejected`);
    /// [`TradingError::Database`] / [`TradingError::Unavailable`] (nothing applied).
    pub async fn place(
        &self,
        member: &MemberId,
        order: NewOrder,
    ) -> Result<OrderView, TradingError> {
        let handle = self.handle(&order.market)?;
        let checked = check_order(&handle.market, order)?;
        let number = self.member_number(member).await?;
        let (reply, answer) = oneshot::channel();
        let request = Request::Command(CommandRequest {
            command: MemberCommand::Place {
                member: member.clone(),
                number,
                order: checked,
            },
            reply,
        });
        send(handle, request, answer).await
    }

    /// Cancels an open order of `member` and releases its hold.
    ///
    /// Errors: [`TradingError::UnknownMarket`], [`TradingError::UnknownOrder`] (no open
    /// order with this id in this market), [`TradingError::ForeignOrder`].
    pub async fn cancel(
        &self,
        member: &MemberId,
        market: &str,
        order_id: u64,
    ) -> Result<OrderView, TradingError> {
        let handle = self.handle(market)?;
        let number = self.member_number(member).await?;
        let (reply, answer) = oneshot::channel();
        let request = Request::Command(CommandRequest {
            command: MemberCommand::Cancel {
                member: member.clone(),
                number,
                order_id,
            },
            reply,
        });
        send(handle, request, answer).await
    }

    /// `member`'s open orders (in `market`, or in every market), newest first, from the
    /// markets' books: each market answers after the batch in flight when it was asked has
    /// committed, so an order placed before this call is listed.
    ///
    /// Errors: [`TradingError::UnknownMarket`], [`TradingError::Unavailable`].
    pub async fn open_orders(
        &self,
        member: &MemberId,
        market: Option<&str>,
    ) -> Result<Vec<OrderView>, TradingError> {
        let handles: Vec<&MarketHandle> = match market {
            Some(market) => vec![self.handle(market)?],
            None => self.inner.markets.values().collect(),
        };
        let mut views = Vec::new();
        for handle in handles {
            let (reply, answer) = oneshot::channel();
            let request = Request::OpenOrders {
                member: member.clone(),
                reply,
            };
            views.extend(ask(handle, request, answer).await?);
        }
        views.sort_by_key(|view| std::cmp::Reverse(view.id));
        Ok(views)
    }

    /// `member`'s orders of any status, newest first, at most `limit` (capped at 1000).
    ///
    /// Errors: as [`Self::open_orders`].
    pub async fn order_history(
        &self,
        member: &MemberId,
        market: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OrderView>, TradingError> {
        self.catch_up(market).await?;
        store::load_orders(
            &self.inner.pool,
            member,
            market,
            limit.min(PAGE_MAX),
            |name| self.inner.markets.get(name).map(|h| h.market.clone()),
        )
        .await
    }

    /// `member`'s trades, newest first, at most `limit` (capped at 1000).
    ///
    /// Errors: as [`Self::open_orders`].
    pub async fn trades(
        &self,
        member: &MemberId,
        market: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TradeView>, TradingError> {
        self.catch_up(market).await?;
        store::load_trades(&self.inner.pool, member, market, limit.min(PAGE_MAX)).await
    }

    /// Projects every batch committed so far of `market` (or of every configured market) into
    /// `orders` and `trades`, so that a read of them sees every answered command.
    ///
    /// Errors: [`TradingError::UnknownMarket`], [`TradingError::Database`].
    async fn catch_up(&self, market: Option<&str>) -> Result<(), TradingError> {
        match market {
            Some(market) => {
                self.handle(market)?;
                projection::catch_up(&self.inner.pool, market).await
            }
            None => {
                for market in self.inner.markets.keys() {
                    projection::catch_up(&self.inner.pool, market).await?;
                }
                Ok(())
            }
        }
    }

    /// The best `levels` price levels of each side (capped at 1000), as of the last settled
    /// batch.
    ///
    /// Errors: [`TradingError::UnknownMarket`].
    pub fn depth(&self, market: &str, levels: usize) -> Result<DepthView, TradingError> {
        let handle = self.handle(market)?;
        let depth = handle
            .depth
            .read()
            .expect("depth lock is never poisoned")
            .clone();
        let m = &handle.market;
        let level = |l: &coinhub_matcher::DepthLevel| {
            (
                m.price_units(l.price_ticks).to_string(),
                m.base_units(l.total_lots).to_string(),
            )
        };
        Ok(DepthView {
            market: market.to_owned(),
            bids: depth.bids.iter().take(levels).map(level).collect(),
            asks: depth.asks.iter().take(levels).map(level).collect(),
        })
    }

    /// The configured markets, by name.
    pub fn markets(&self) -> Vec<MarketView> {
        self.inner
            .markets
            .values()
            .map(|handle| {
                let m = &handle.market;
                MarketView {
                    name: m.name.clone(),
                    base: m.base.to_string(),
                    quote: m.quote.to_string(),
                    tick_size: m.tick_size.to_string(),
                    lot_size: m.lot_size.to_string(),
                    min_quantity: m.base_units(m.min_lots).to_string(),
                    maker_fee_bps: m.maker_fee_bps,
                    taker_fee_bps: m.taker_fee_bps,
                }
            })
            .collect()
    }
}

/// Queues a command for the market's task and formats its answer.
async fn send(
    handle: &MarketHandle,
    request: Request,
    answer: oneshot::Receiver<Outcome>,
) -> Result<OrderView, TradingError> {
    let market = &handle.market;
    let order = ask(handle, request, answer).await??;
    Ok(order.view(&market.name, market.base.as_str(), market.quote.as_str()))
}

/// Queues `request` for the market's task and waits for its answer.
async fn ask<T>(
    handle: &MarketHandle,
    request: Request,
    answer: oneshot::Receiver<T>,
) -> Result<T, TradingError> {
    let stopped = || TradingError::Unavailable("market task stopped".into());
    handle.requests.send(request).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())
}

/// Checks `order` against `market` without touching any state.
pub(crate) fn check_order(market: &Market, order: NewOrder) -> Result<Checked, TradingError> {
    let convert = |e| TradingError::from_convert(e, market.tick_size, market.lot_size);
    let parse =
        |field: &'static str, value: &Option<String>| -> Result<Option<u128>, TradingError> {
            value
                .as_deref()
                .map(|text| Market::parse_units(field, text.trim()).map_err(convert))
                .transpose()
        };
    if let Some(id) = &order.client_order_id {
        let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(TradingError::InvalidQuantity(
                "client_order_id must be 1-64 printable ASCII characters".into(),
            ));
        }
    }
    let price = parse("price", &order.price)?;
    let quantity = parse("quantity", &order.quantity)?;
    let quote_amount = parse("quote_amount", &order.quote_amount)?;
    let lots = |quantity: u128| -> Result<u64, TradingError> {
        let lots = market.quantity_lots(quantity).map_err(convert)?;
        if lots < market.min_lots {
            return Err(TradingError::BelowMinimum {
                quantity: quantity.to_string(),
                min_quantity: market.base_units(market.min_lots).to_string(),
            });
        }
        Ok(lots)
    };
    let invalid = |text: &str| Err(TradingError::InvalidQuantity(text.to_owned()));
    let (matcher_kind, time_in_force) = match order.kind {
        OrderKind::Limit => {
            let (Some(price), Some(quantity)) = (price, quantity) else {
                return invalid("a limit order needs price and quantity");
            };
            if quote_amount.is_some() {
                return invalid("quote_amount is only for market buys");
            }
            let price_ticks = market.price_ticks(price).map_err(convert)?;
            let quantity_lots = lots(quantity)?;
            if market.notional(price_ticks, quantity_lots).is_none() {
                return invalid("price × quantity is too large");
            }
            let tif = order.time_in_force.unwrap_or_default();
            let matcher_tif = match tif {
                TimeInForce::Gtc => MatcherTif::Gtc,
                TimeInForce::Ioc => MatcherTif::Ioc,
                TimeInForce::Fok => MatcherTif::Fok,
                TimeInForce::PostOnly => MatcherTif::PostOnly,
            };
            (
                MatcherKind::Limit {
                    price_ticks,
                    quantity_lots,
                    tif: matcher_tif,
                },
                Some(tif),
            )
        }
        OrderKind::Market => {
            if price.is_some() {
                return invalid("a market order takes no price");
            }
            if order.time_in_force.is_some() {
                return invalid("time_in_force is only for limit orders");
            }
            match (quantity, quote_amount, order.side) {
                (Some(quantity), None, _) => (
                    MatcherKind::Market {
                        quantity_lots: lots(quantity)?,
                    },
                    None,
                ),
                (None, Some(quote_amount), Side::Buy) => (
                    MatcherKind::MarketBuyByQuote {
                        quote_amount: market.quote_budget(quote_amount).map_err(convert)?,
                    },
                    None,
                ),
                (None, Some(_), Side::Sell) => {
                    return invalid("a market sell takes quantity, not quote_amount");
                }
                _ => {
                    return invalid("a market order needs exactly one of quantity or quote_amount");
                }
            }
        }
    };
    Ok(Checked {
        side: order.side,
        kind: order.kind,
        matcher_kind,
        time_in_force,
        client_order_id: order.client_order_id,
    })
}

struct IdSource {
    next_order_id: AtomicU64,
    next_trade_id: AtomicU64,
}

/// One market's book and the service's view of its open orders.
pub(crate) struct MarketState {
    pub(crate) market: Arc<Market>,
    pub(crate) book: OrderBook,
    /// Last committed command.
    pub(crate) seq: u64,
    /// Open orders by id.
    pub(crate) open: FxHashMap<u64, OrderRow>,
    /// Ids of each member's open orders (the keys of `open`, by member).
    open_by_member: FxHashMap<MemberId, BTreeSet<u64>>,
    /// The last command included in a saved (or being saved) book snapshot; 0 for none.
    snapshot_seq: u64,
    /// How the book was rebuilt at load.
    rebuild: BookRebuild,
}

pub(crate) fn matcher_market(market: &Market) -> MatcherMarket {
    // The configured minimum is enforced before a command is logged, so replay does not
    // depend on it.
    MatcherMarket {
        base: market.base.to_string(),
        quote: market.quote.to_string(),
        min_order_lots: 1,
    }
}

impl MarketState {
    fn new(market: Arc<Market>, book: OrderBook, seq: u64) -> Self {
        Self {
            market,
            book,
            seq,
            open: FxHashMap::default(),
            open_by_member: FxHashMap::default(),
            snapshot_seq: 0,
            rebuild: BookRebuild::default(),
        }
    }

    /// Records `row` as open.
    fn insert_open(&mut self, row: OrderRow) {
        self.open_by_member
            .entry(row.member.clone())
            .or_default()
            .insert(row.id);
        self.open.insert(row.id, row);
    }

    /// Forgets open order `id` and returns it.
    fn remove_open(&mut self, id: u64) -> Option<OrderRow> {
        let row = self.open.remove(&id)?;
        if let Some(ids) = self.open_by_member.get_mut(&row.member) {
            ids.remove(&id);
            if ids.is_empty() {
                self.open_by_member.remove(&row.member);
            }
        }
        Some(row)
    }

    /// `member`'s open orders, newest (highest id) first.
    fn open_of<'a>(&'a self, member: &MemberId) -> impl Iterator<Item = &'a OrderRow> + 'a {
        self.open_by_member
            .get(member)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .map(|id| &self.open[id])
    }

    /// Rebuilds the book from the command log and checks it against the open orders.
    pub(crate) async fn load(pool: &PgPool, market: Arc<Market>) -> Result<Self, TradingError> {
        let (mut book, snapshot_seq) =
            snapshot::newest_book(pool, &market.name, || matcher_market(&market)).await?;
        let commands = store::load_commands(pool, &market.name, snapshot_seq).await?;
        let mut events = Vec::new();
        let mut seq = snapshot_seq;
        for (stored_seq, command) in &commands {
            if *stored_seq <= snapshot_seq {
                continue;
            }
            assert_eq!(
                *stored_seq,
                seq + 1,
                "the command log of {} has no gaps",
                market.name
            );
            seq = *stored_seq;
            events.clear();
            book.execute(command, &mut events);
        }
        let resting: Vec<u64> = snapshot::resting_ids(&book.snapshot()).collect();
        // The resting orders' rows are read models: project what has committed first.
        projection::catch_up(pool, &market.name).await?;
        let rows = store::load_orders_by_id(pool, &market, &resting).await?;
        let mut state = Self::new(market, book, seq);
        state.rebuild = BookRebuild {
            snapshot_seq: (snapshot_seq > 0).then_some(snapshot_seq),
            replayed_commands: seq - snapshot_seq,
            open_orders: 0,
        };
        state.snapshot_seq = snapshot_seq;
        for row in rows {
            assert_eq!(
                row.status, "open",
                "order {} rests in the replayed book of {}",
                row.id, state.market.name
            );
            state.insert_open(row);
        }
        let (market, book, open) = (&state.market, &state.book, &state.open);
        assert_eq!(
            book.order_count(),
            open.len(),
            "replayed book of {} holds exactly the open orders",
            market.name
        );
        for row in open.values() {
            assert_eq!(
                book.remaining_lots(OrderId(row.id)),
                Some(row.remaining_lots()),
                "replayed order {} has its recorded remaining quantity",
                row.id
            );
        }
        state.rebuild.open_orders = open.len();
        tracing::info!(market = %market.name, commands = state.seq, open = open.len(),
            snapshot_seq, replayed = seq - snapshot_seq, "book rebuilt");
        Ok(state)
    }
}

struct Worker {
    pool: PgPool,
    state: MarketState,
    ids: Arc<IdSource>,
    /// Ledger account ids seen so far, shared by every market's writers.
    accounts: Arc<AccountIds>,
    options: EngineOptions,
    depth: Arc<RwLock<Depth>>,
    /// Wakes the background projector of `orders` and `trades` after a commit.
    projector: mpsc::Sender<()>,
}

/// A batch run against the book, with what to write and what to answer once it commits.
struct Prepared {
    commands: Vec<MemberCommand>,
    replies: Vec<oneshot::Sender<Outcome>>,
    outcomes: Vec<Outcome>,
    /// Open-order queries that arrived with the batch, and their answers (the state after it).
    queries: Vec<(MemberId, oneshot::Sender<Vec<OrderView>>)>,
    answers: Vec<Vec<OrderView>>,
    batch: Arc<Batch>,
    /// The book's depth after the batch, published when it commits.
    depth: Depth,
    /// A book snapshot after the batch (its last command, the book), saved once it commits.
    snapshot: Option<(u64, BookSnapshot)>,
}

impl Prepared {
    /// The batch's requests, to run again on a rebuilt book.
    fn into_requests(self) -> Requests {
        (self.commands, self.replies, self.queries)
    }
}

/// A batch's commands, where their outcomes go, and its open-order queries.
type Requests = (
    Vec<MemberCommand>,
    Vec<oneshot::Sender<Outcome>>,
    Vec<(MemberId, oneshot::Sender<Vec<OrderView>>)>,
);

/// Most batches written at once. Batch *n* + 1 writes its independent rows while batch *n*
/// finishes, so two PostgreSQL backends work at the same time; it commits after *n*.
const WRITES_IN_FLIGHT: usize = 2;

/// A batch being written and committed by its own task.
struct Writing {
    task: tokio::task::JoinHandle<Result<(), TradingError>>,
    /// Resolves when the task has committed (`true`) or given up (`false`); the next batch's
    /// task waits for it before its dependent writes.
    committed: Option<oneshot::Receiver<bool>>,
    prepared: Prepared,
}

/// What the market's task woke up for.
enum Wake {
    /// New requests (0: every sender is gone).
    Requests(usize),
    /// The oldest batch in flight finished writing.
    Written(Result<(), TradingError>),
}

fn joined(
    result: Result<Result<(), TradingError>, tokio::task::JoinError>,
) -> Result<(), TradingError> {
    result.unwrap_or_else(|e| Err(TradingError::Database(format!("batch writer stopped: {e}"))))
}

impl Worker {
    /// Serves the market. Batches are pipelined: the next batch runs against the book (on
    /// balances that carry the changes of the batches in flight forward) while up to
    /// [`WRITES_IN_FLIGHT`] earlier ones are written; they commit in order, and every answer
    /// waits for its own batch's commit. A batch that does not commit rebuilds the book from
    /// the log, and it and every batch after it run again.
    async fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        let mut writing: VecDeque<Writing> = VecDeque::with_capacity(WRITES_IN_FLIGHT);
        let mut requests = Vec::with_capacity(BATCH_MAX);
        loop {
            // With every writer busy, requests wait (and the next batch grows) until the
            // oldest batch is done.
            let full = writing.len() >= WRITES_IN_FLIGHT;
            let wake = match writing.front_mut() {
                None => Wake::Requests(receiver.recv_many(&mut requests, BATCH_MAX).await),
                Some(oldest) if full => Wake::Written(joined((&mut oldest.task).await)),
                Some(oldest) => tokio::select! {
                    received = receiver.recv_many(&mut requests, BATCH_MAX) =>
                        Wake::Requests(received),
                    result = &mut oldest.task => Wake::Written(joined(result)),
                },
            };
            match wake {
                Wake::Written(result) => {
                    self.written(result, &mut writing).await;
                }
                Wake::Requests(0) => break,
                Wake::Requests(_) => {
                    let batch = split_requests(requests.drain(..));
                    let in_flight: Vec<&Batch> =
                        writing.iter().map(|w| &*w.prepared.batch).collect();
                    let mut prepared = self.prepare(batch, &in_flight).await;
                    // Settle what finished while this batch ran: one that failed means this
                    // batch ran on top of a book since rebuilt without it.
                    while writing.front().is_some_and(|w| w.task.is_finished()) {
                        let oldest = writing.front_mut().expect("a batch is in flight");
                        let result = joined((&mut oldest.task).await);
                        if !self.written(result, &mut writing).await {
                            prepared = self.prepare(prepared.into_requests(), &[]).await;
                        }
                    }
                    let after = writing.back_mut().and_then(|w| w.committed.take());
                    writing.push_back(self.start_writing(prepared, after));
                }
            }
        }
        while let Some(oldest) = writing.front_mut() {
            let result = joined((&mut oldest.task).await);
            self.written(result, &mut writing).await;
        }
        tracing::info!(market = %self.state.market.name, "market task stopped");
    }

    /// Runs a batch's commands against the book on the requesting members' balances (read
    /// now, plus the changes of the `in_flight` batches that have not committed yet) and
    /// records what to write. If the balances cannot be read nothing runs: the commands are
    /// answered with the error at once.
    async fn prepare(&mut self, requests: Requests, in_flight: &[&Batch]) -> Prepared {
        let (commands, replies, queries) = requests;
        let started = std::time::Instant::now();
        let market = self.state.market.clone();
        let (commands, replies, balances) = match self.balances(&commands, in_flight).await {
            Ok(balances) => (commands, replies, balances),
            Err(error) => {
                tracing::error!(market = %market.name, %error,
                    "reading balances failed; the batch's commands are refused, nothing ran");
                for reply in replies {
                    let _ = reply.send(Err(TradingError::Database(error.to_string())));
                }
                (Vec::new(), Vec::new(), Available::default())
            }
        };
        let read = started.elapsed();
        let mut batch = Batch::new(&market, balances, now_micros(), commands.len());
        let outcomes = commands
            .iter()
            .map(|command| batch.run(&mut self.state, &self.ids, command.clone()))
            .collect();
        let answers = queries
            .iter()
            .map(|(member, _)| {
                self.state
                    .open_of(member)
                    .map(|row| row.view(&market))
                    .collect()
            })
            .collect();
        tracing::trace!(market = %market.name, commands = commands.len(),
            read_us = read.as_micros(), match_us = (started.elapsed() - read).as_micros(),
            "batch prepared");
        Prepared {
            commands,
            replies,
            outcomes,
            queries,
            answers,
            batch: Arc::new(batch),
            depth: self.state.book.depth(DEPTH_LEVELS_MAX),
            snapshot: self.snapshot_due(),
        }
    }

    /// The available balances the batch of `commands` starts from.
    async fn balances(
        &self,
        commands: &[MemberCommand],
        in_flight: &[&Batch],
    ) -> Result<Available, TradingError> {
        if commands.is_empty() {
            return Ok(Available::default());
        }
        let members: Vec<MemberId> = commands
            .iter()
            .map(|command| command.member().clone())
            .collect::<FxHashSet<_>>()
            .into_iter()
            .collect();
        let (mut available, committed) =
            store::read_balances(&self.pool, &self.state.market, &members).await?;
        for batch in in_flight {
            if batch.last_seq().is_some_and(|last| last > committed) {
                batch.changes.carry_forward(&mut available);
            }
        }
        Ok(available)
    }

    /// A book snapshot to save after this batch, when `snapshot_every` commands have run
    /// since the last one.
    fn snapshot_due(&mut self) -> Option<(u64, BookSnapshot)> {
        let state = &mut self.state;
        if state.seq < state.snapshot_seq + self.options.snapshot_every.max(1) {
            return None;
        }
        state.snapshot_seq = state.seq;
        Some((state.seq, state.book.snapshot()))
    }

    /// Writes and commits `prepared` on its own task; its dependent writes wait for `after`
    /// (the previous batch's commit), if any.
    fn start_writing(&self, prepared: Prepared, after: Option<oneshot::Receiver<bool>>) -> Writing {
        let (committed, committed_receiver) = oneshot::channel();
        let (pool, market, batch, accounts, events) = (
            self.pool.clone(),
            self.state.market.clone(),
            prepared.batch.clone(),
            self.accounts.clone(),
            self.options.events,
        );
        let task = tokio::spawn(async move {
            let result = write_in_transaction(pool, market, batch, &accounts, events, after).await;
            let _ = committed.send(result.is_ok());
            result
        });
        Writing {
            task,
            committed: Some(committed_receiver),
            prepared,
        }
    }

    /// Finishes the oldest batch in flight, whose task returned `result`: answers it if it
    /// committed. If it did not, the batches after it do not commit either (their tasks see
    /// it fail); the book is rebuilt from the log, the failed batch is run again (after a
    /// conflict) or refused, and the later ones run again. Returns whether it committed.
    async fn written(
        &mut self,
        result: Result<(), TradingError>,
        writing: &mut VecDeque<Writing>,
    ) -> bool {
        let oldest = writing.pop_front().expect("a batch is in flight");
        let error = match result {
            Ok(()) => {
                self.committed(oldest.prepared);
                return true;
            }
            Err(error) => error,
        };
        let mut later = Vec::with_capacity(writing.len());
        for mut next in writing.drain(..) {
            // They wait for this batch's commit, which did not happen: they roll back.
            let _ = (&mut next.task).await;
            if let Some(metrics) = self
                .options
                .metrics
                .as_ref()
                .filter(|_| !next.prepared.batch.commands.is_empty())
            {
                metrics.record_failure(&self.state.market.name, BatchFailure::Retried);
            }
            later.push(next.prepared.into_requests());
        }
        self.recover(oldest.prepared.into_requests(), error, 1)
            .await;
        for requests in later {
            if let Err((requests, error)) = self.run_once(requests).await {
                self.recover(requests, error, 1).await;
            }
        }
        false
    }

    /// Runs a batch with nothing else in flight and answers it if it commits; otherwise
    /// gives its requests back with the error (the book is then ahead of the log).
    async fn run_once(&mut self, requests: Requests) -> Result<(), (Requests, TradingError)> {
        let prepared = self.prepare(requests, &[]).await;
        let mut writing = self.start_writing(prepared, None);
        match joined((&mut writing.task).await) {
            Ok(()) => {
                self.committed(writing.prepared);
                Ok(())
            }
            Err(error) => Err((writing.prepared.into_requests(), error)),
        }
    }

    /// After a batch's `attempts`-th run failed with `error`: rebuilds the book from the log;
    /// while the batch loses conflicts it runs again alone, up to [`CONFLICT_ATTEMPTS`] runs in
    /// all; any other failure refuses its commands.
    async fn recover(
        &mut self,
        mut requests: Requests,
        mut error: TradingError,
        mut attempts: u32,
    ) {
        loop {
            self.rebuild().await;
            let retry = matches!(error, TradingError::Conflict(_)) && attempts < CONFLICT_ATTEMPTS;
            if let Some(metrics) = &self.options.metrics {
                let failure = if retry {
                    BatchFailure::Retried
                } else {
                    BatchFailure::Refused
                };
                metrics.record_failure(&self.state.market.name, failure);
            }
            if !retry {
                self.refuse(requests, &error);
                return;
            }
            tracing::warn!(market = %self.state.market.name, %error, attempts,
                "batch lost a conflict with a concurrent transaction; nothing applied; \
                 running it again on the rebuilt book");
            attempts += 1;
            match self.run_once(requests).await {
                Ok(()) => return,
                Err((again, next)) => (requests, error) = (again, next),
            }
        }
    }

    /// Answers a batch that was not applied: every command gets `error` (`unavailable` after
    /// conflicts, `internal` otherwise), every query the rebuilt book's open orders.
    fn refuse(&mut self, (_, replies, queries): Requests, error: &TradingError) {
        tracing::error!(market = %self.state.market.name, %error,
            "settling a batch failed; nothing applied; book rebuilt from the log");
        let answer = match error {
            TradingError::Conflict(_) => TradingError::Unavailable(format!(
                "{error}; still conflicting after {CONFLICT_ATTEMPTS} attempts, retry"
            )),
            _ => TradingError::Database(error.to_string()),
        };
        for reply in replies {
            let _ = reply.send(Err(answer.clone()));
        }
        let market = self.state.market.clone();
        for (member, reply) in queries {
            let open = self.state.open_of(&member);
            let _ = reply.send(open.map(|row| row.view(&market)).collect());
        }
    }

    /// Answers a committed batch, publishes its depth and saves its snapshot (off the market's
    /// task, so the market does not wait for it).
    fn committed(&mut self, prepared: Prepared) {
        // A batch of queries alone settles nothing.
        if let Some(metrics) = self
            .options
            .metrics
            .as_ref()
            .filter(|_| !prepared.batch.commands.is_empty())
        {
            let settle = OffsetDateTime::now_utc() - prepared.batch.now;
            metrics.record_settled(
                &self.state.market.name,
                prepared.batch.commands.len(),
                prepared.batch.trades.len(),
                settle.try_into().unwrap_or_default(),
            );
        }
        for (reply, outcome) in prepared.replies.into_iter().zip(prepared.outcomes) {
            // A caller that went away still had its command settled.
            let _ = reply.send(outcome);
        }
        for ((_, reply), answer) in prepared.queries.into_iter().zip(prepared.answers) {
            let _ = reply.send(answer);
        }
        *self.depth.write().expect("depth lock is never poisoned") = prepared.depth;
        // Full: the projector is already due to run (it takes every committed batch).
        let _ = self.projector.try_send(());
        if let Some((seq, book)) = prepared.snapshot {
            let (pool, market) = (self.pool.clone(), self.state.market.name.clone());
            tokio::spawn(async move {
                match snapshot::save(&pool, &market, seq, &book).await {
                    Ok(()) => tracing::info!(%market, seq, "book snapshot saved"),
                    Err(error) => tracing::warn!(%market, seq, %error,
                        "saving a book snapshot failed; the next one is due later"),
                }
            });
        }
    }

    /// Rebuilds the book and open orders from the committed log (they ran ahead of the
    /// database in a batch that did not commit), retrying every second until it succeeds.
    async fn rebuild(&mut self) {
        loop {
            match MarketState::load(&self.pool, self.state.market.clone()).await {
                Ok(state) => {
                    self.state = state;
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "rebuilding the book failed; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Splits a batch of requests into commands, their reply channels and open-order queries.
fn split_requests(requests: impl Iterator<Item = Request>) -> Requests {
    let (mut commands, mut replies, mut queries) = (Vec::new(), Vec::new(), Vec::new());
    for request in requests {
        match request {
            Request::Command(CommandRequest { command, reply }) => {
                commands.push(command);
                replies.push(reply);
            }
            Request::OpenOrders { member, reply } => queries.push((member, reply)),
        }
    }
    (commands, replies, queries)
}

/// Writes `batch` in one transaction and commits it (nothing for a batch without commands);
/// its dependent writes wait for `after` (the previous batch's commit; `false` or dropped:
/// it did not commit, and neither does this one).
async fn write_in_transaction(
    pool: PgPool,
    market: Arc<Market>,
    batch: Arc<Batch>,
    accounts: &AccountIds,
    events: EventsSink,
    after: Option<oneshot::Receiver<bool>>,
) -> Result<(), TradingError> {
    let previous = async move {
        match after {
            None => Ok(()),
            Some(after) => match after.await {
                Ok(true) => Ok(()),
                _ => Err(TradingError::Conflict(
                    "the batch before it did not commit".into(),
                )),
            },
        }
    };
    if batch.commands.is_empty() {
        return previous.await;
    }
    let started = std::time::Instant::now();
    // Opened (if new) and committed before the transaction: see `accounts.rs`.
    let changes = batch.changes.accounts(&market);
    let accounts = accounts.resolve(&pool, changes.keys()).await?;
    // Every join of the batch looks up at most a few thousand rows by key (order ids,
    // accounts). With a small or cached table PostgreSQL's costs favour hashing the whole
    // table instead, which grows with the table: ~30 ms per batch at 120 k orders
    // (measured). Probe the indexes, in this transaction only (set with `BEGIN`: one round
    // trip).
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        .await?;
    store::write_batch(
        &mut tx, &market, &batch, &changes, &accounts, events, previous,
    )
    .await?;
    let written = started.elapsed();
    tx.commit().await?;
    tracing::debug!(
        market = %market.name,
        commands = batch.commands.len(),
        trades = batch.trades.len(),
        legs = changes.len(),
        write_us = written.as_micros(),
        commit_us = (started.elapsed() - written).as_micros(),
        "batch settled"
    );
    Ok(())
}

/// Account balances a batch reads, and the net change it makes.
pub(crate) struct Batch {
    market: Arc<Market>,
    /// When the batch ran; every row and message of the batch carries this time.
    pub(crate) now: OffsetDateTime,
    /// Current available balances of the batch's members.
    available: Available,
    /// Net change of each account the batch touched.
    pub(crate) changes: Changes,
    pub(crate) commands: Vec<(u64, Command)>,
    /// Each order's last state in the batch, by id (unordered: `write_batch` sorts them by id
    /// for the outcome, off the market's task).
    pub(crate) orders: FxHashMap<u64, OrderRow>,
    pub(crate) trades: Vec<TradeRow>,
    events: Vec<Event>,
}

/// A command's answer: the order after it, in base units. The caller formats it into an
/// [`OrderView`] ([`send`]), so the market's task, which runs one command at a time, does not
/// spend its time on text (the view's amounts and times were ~18 % of that task's time in the
/// settlement bench).
type Outcome = Result<OrderUnits, TradingError>;

impl Batch {
    /// An empty batch with room for about `commands` commands (its maps and lists are sized
    /// once instead of growing, and rehashing, while the batch runs).
    pub(crate) fn new(
        market: &Arc<Market>,
        available: Available,
        now: OffsetDateTime,
        commands: usize,
    ) -> Self {
        Self {
            market: market.clone(),
            now,
            available,
            changes: Changes::default(),
            commands: Vec::with_capacity(commands),
            orders: FxHashMap::with_capacity_and_hasher(commands, Default::default()),
            trades: Vec::with_capacity(commands),
            events: Vec::with_capacity(commands),
        }
    }

    /// The batch's last command, if it has any.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.commands.last().map(|(seq, _)| *seq)
    }

    fn asset(&self, base: bool) -> &AssetSymbol {
        if base {
            &self.market.base
        } else {
            &self.market.quote
        }
    }

    /// Moves `amount` of `member`'s base (or quote) from available to locked.
    fn lock(&mut self, member: &MemberId, base: bool, amount: u128) {
        let available = &mut self
            .available
            .get_mut(member)
            .expect("the batch read every requesting member's balances")[slot(base)];
        *available = available
            .checked_sub(amount)
            .expect("lock checked against available");
        self.changes.debit(member, Held::Available, base, amount);
        self.changes.credit(member, Held::Locked, base, amount);
    }

    /// Moves `amount` back from locked to available.
    fn unlock(&mut self, member: &MemberId, base: bool, amount: u128) {
        self.add_available(member, base, amount);
        self.changes.debit(member, Held::Locked, base, amount);
        self.changes.credit(member, Held::Available, base, amount);
    }

    fn add_available(&mut self, member: &MemberId, base: bool, amount: u128) {
        if let Some(available) = self.available.get_mut(member) {
            let available = &mut available[slot(base)];
            *available = available.checked_add(amount).expect("balances fit u128");
        }
    }

    /// Runs one command against the book, recording what to write.
    fn run(&mut self, state: &mut MarketState, ids: &IdSource, command: MemberCommand) -> Outcome {
        match command {
            MemberCommand::Place {
                member,
                number,
                order,
            } => self.place(state, ids, member, number, order),
            MemberCommand::Cancel {
                member,
                number,
                order_id,
            } => self.cancel(state, ids, &member, number, order_id),
        }
    }

    /// What `order` must lock: (base asset?, amount).
    fn hold(
        &self,
        state: &MarketState,
        member: &MemberId,
        order: &Checked,
    ) -> Option<(bool, u128)> {
        let m = &self.market;
        match (order.side, order.matcher_kind) {
            (Side::Sell, MatcherKind::Limit { quantity_lots, .. })
            | (Side::Sell, MatcherKind::Market { quantity_lots }) => {
                Some((true, m.base_units(quantity_lots)))
            }
            (
                Side::Buy,
                MatcherKind::Limit {
                    price_ticks,
                    quantity_lots,
                    ..
                },
            ) => {
                let notional = m.notional(price_ticks, quantity_lots)?;
                let bps = m.maker_fee_bps.max(m.taker_fee_bps);
                Some((false, notional.checked_add(Market::fee(notional, bps))?))
            }
            (Side::Buy, MatcherKind::MarketBuyByQuote { quote_amount }) => {
                let notional = u128::from(quote_amount).checked_mul(m.tick_size)?;
                Some((
                    false,
                    notional.checked_add(Market::fee(notional, m.taker_fee_bps))?,
                ))
            }
            (Side::Buy, MatcherKind::Market { quantity_lots }) => {
                // Worst case: the cost of the first `quantity + own resting asks` lots (our own
                // asks are cancelled, not traded, so the fills lie within them).
                let own: u64 = state
                    .open_of(member)
                    .filter(|row| row.side == Side::Sell)
                    .map(OrderRow::remaining_lots)
                    .sum();
                let mut want = quantity_lots.checked_add(own)?;
                let mut cost: u128 = 0;
                for level in state.book.depth(usize::MAX).asks {
                    if want == 0 {
                        break;
                    }
                    let take = want.min(level.total_lots);
                    cost = cost.checked_add(m.notional(level.price_ticks, take)?)?;
                    want -= take;
                }
                Some((false, cost.checked_add(Market::fee(cost, m.taker_fee_bps))?))
            }
            (Side::Sell, MatcherKind::MarketBuyByQuote { .. }) => None,
        }
    }

    fn place(
        &mut self,
        state: &mut MarketState,
        ids: &IdSource,
        member: MemberId,
        number: u64,
        order: Checked,
    ) -> Outcome {
        let Some((hold_base, hold)) = self.hold(state, &member, &order) else {
            return Err(TradingError::InvalidQuantity(
                "order amount too large".into(),
            ));
        };
        let available = self
            .available
            .get(&member)
            .map_or(0, |available| available[slot(hold_base)]);
        if available < hold {
            return Err(TradingError::InsufficientFunds {
                asset: self.asset(hold_base).to_string(),
                needed: hold.to_string(),
                available: available.to_string(),
            });
        }
        self.lock(&member, hold_base, hold);
        let id = ids.next_order_id.fetch_add(1, Ordering::SeqCst);
        state.seq += 1;
        let command = Command::Place {
            id: OrderId(id),
            member: MatcherMember(number),
            side: match order.side {
                Side::Buy => MatcherSide::Buy,
                Side::Sell => MatcherSide::Sell,
            },
            kind: order.matcher_kind,
        };
        let m = self.market.clone();
        let (price, quantity_lots, quote_budget) = match order.matcher_kind {
            MatcherKind::Limit {
                price_ticks,
                quantity_lots,
                ..
            } => (Some(price_ticks), Some(quantity_lots), None),
            MatcherKind::Market { quantity_lots } => (None, Some(quantity_lots), None),
            MatcherKind::MarketBuyByQuote { quote_amount } => (None, None, Some(quote_amount)),
        };
        let row = OrderRow {
            id,
            member: member.clone(),
            side: order.side,
            kind: order.kind,
            price_ticks: price,
            quantity_lots,
            quote_budget,
            time_in_force: order.time_in_force,
            client_order_id: order.client_order_id,
            filled_lots: 0,
            filled_quote: 0,
            hold,
            hold_base,
            status: "open",
            reason: None,
            seq: state.seq,
            created_at: self.now,
            updated_at: self.now,
        };
        state.insert_open(row);
        self.commands.push((state.seq, command));
        self.apply(state, ids, &command);
        let row = self
            .orders
            .get(&id)
            .or_else(|| state.open.get(&id))
            .expect("a placed order is recorded");
        if row.status == "rejected" {
            return Err(TradingError::Rejected {
                reason: row.reason.clone().unwrap_or_default(),
                order: Box::new(row.view(&m)),
            });
        }
        Ok(OrderUnits::of(row, &m))
    }

    fn cancel(
        &mut self,
        state: &mut MarketState,
        ids: &IdSource,
        member: &MemberId,
        number: u64,
        order_id: u64,
    ) -> Outcome {
        let Some(row) = state.open.get(&order_id) else {
            return Err(TradingError::UnknownOrder(order_id));
        };
        if &row.member != member {
            return Err(TradingError::ForeignOrder(order_id));
        }
        state.seq += 1;
        let command = Command::Cancel {
            id: OrderId(order_id),
            member: MatcherMember(number),
        };
        self.commands.push((state.seq, command));
        self.apply(state, ids, &command);
        let row = self
            .orders
            .get(&order_id)
            .expect("a cancelled order is recorded");
        assert_eq!(
            row.status, "cancelled",
            "a cancel of an open order cancels it"
        );
        Ok(OrderUnits::of(row, &self.market))
    }

    /// Applies `command` to the book and turns its events into order, trade and ledger
    /// changes.
    fn apply(&mut self, state: &mut MarketState, ids: &IdSource, command: &Command) {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        state.book.execute(command, &mut events);
        let seq = state.seq;
        let mut ordinal = 0;
        for event in &events {
            match *event {
                Event::Accepted { .. } => {}
                Event::Rejected { id, reason } => {
                    let mut row = state
                        .remove_open(id.0)
                        .expect("a rejected order was just placed");
                    self.unlock(&row.member, row.hold_base, row.hold);
                    row.hold = 0;
                    row.status = "rejected";
                    row.reason = Some(reject_code(reason).to_owned());
                    self.orders.insert(row.id, row);
                }
                Event::Trade {
                    maker_id,
                    taker_id,
                    taker_side,
                    price_ticks,
                    quantity_lots,
                    ..
                } => {
                    ordinal += 1;
                    let trade_id = ids.next_trade_id.fetch_add(1, Ordering::SeqCst);
                    self.trade(
                        state,
                        seq,
                        ordinal,
                        trade_id,
                        maker_id.0,
                        taker_id.0,
                        taker_side,
                        price_ticks,
                        quantity_lots,
                    );
                }
                Event::Cancelled {
                    id,
                    remaining: _,
                    reason,
                } => {
                    let mut row = state.remove_open(id.0).expect("a cancelled order was open");
                    self.unlock(&row.member, row.hold_base, row.hold);
                    row.hold = 0;
                    row.status = "cancelled";
                    row.reason = Some(
                        match reason {
                            CancelReason::Requested => "requested",
                            CancelReason::SelfTrade => "self_trade",
                            CancelReason::Unfilled => "unfilled",
                            _ => "cancelled",
                        }
                        .to_owned(),
                    );
                    row.updated_at = self.now;
                    self.orders.insert(row.id, row);
                }
                Event::Done { id } => {
                    let mut row = state.remove_open(id.0).expect("a done order was open");
                    self.unlock(&row.member, row.hold_base, row.hold);
                    row.hold = 0;
                    row.status = "filled";
                    row.updated_at = self.now;
                    self.orders.insert(row.id, row);
                }
            }
        }
        // The taker may rest: record its current state too.
        if let Command::Place { id, .. } = command
            && let Some(row) = state.open.get(&id.0)
        {
            self.orders.insert(row.id, row.clone());
        }
        self.events = events;
    }

    #[allow(clippy::too_many_arguments)]
    fn trade(
        &mut self,
        state: &mut MarketState,
        seq: u64,
        ordinal: u32,
        trade_id: u64,
        maker_id: u64,
        taker_id: u64,
        taker_side: MatcherSide,
        price_ticks: u64,
        quantity_lots: u64,
    ) {
        let m = self.market.clone();
        let notional = m
            .notional(price_ticks, quantity_lots)
            .expect("a trade's notional is at most its order's checked hold");
        let base = m.base_units(quantity_lots);
        let maker_fee = Market::fee(notional, m.maker_fee_bps);
        let taker_fee = Market::fee(notional, m.taker_fee_bps);
        let (buyer_id, seller_id, buyer_fee, seller_fee) = match taker_side {
            MatcherSide::Buy => (taker_id, maker_id, taker_fee, maker_fee),
            MatcherSide::Sell => (maker_id, taker_id, maker_fee, taker_fee),
        };
        let buyer_pays = notional.checked_add(buyer_fee).expect("fits u128");
        let seller_gets = notional - seller_fee;
        let (buyer, seller) = {
            let buyer = state
                .open
                .get_mut(&buyer_id)
                .expect("the buyer's order is open");
            assert!(
                buyer.hold >= buyer_pays,
                "order {buyer_id}'s hold covers its trade"
            );
            buyer.hold -= buyer_pays;
            buyer.filled_lots += quantity_lots;
            buyer.filled_quote += notional;
            buyer.updated_at = self.now;
            let buyer = buyer.member.clone();
            let seller = state
                .open
                .get_mut(&seller_id)
                .expect("the seller's order is open");
            assert!(
                seller.hold >= base,
                "order {seller_id}'s hold covers its trade"
            );
            seller.hold -= base;
            seller.filled_lots += quantity_lots;
            seller.filled_quote += notional;
            seller.updated_at = self.now;
            (buyer, seller.member.clone())
        };
        for order_id in [maker_id, taker_id] {
            let row = state.open[&order_id].clone();
            self.orders.insert(order_id, row);
        }
        // Buyer: locked quote pays notional + fee, receives base.
        self.changes.debit(&buyer, Held::Locked, QUOTE, buyer_pays);
        self.changes.credit(&buyer, Held::Available, BASE, base);
        self.add_available(&buyer, BASE, base);
        // Seller: locked base goes, receives notional − fee.
        self.changes.debit(&seller, Held::Locked, BASE, base);
        self.changes
            .credit(&seller, Held::Available, QUOTE, seller_gets);
        self.add_available(&seller, QUOTE, seller_gets);
        self.changes.credit_fees(maker_fee + taker_fee);
        let maker_member = state.open[&maker_id].member.clone();
        let taker_member = state.open[&taker_id].member.clone();
        self.trades.push(TradeRow {
            id: trade_id,
            seq,
            ordinal,
            price: m.price_units(price_ticks),
            quantity: base,
            quote_quantity: notional,
            maker_order_id: maker_id,
            taker_order_id: taker_id,
            maker_member,
            taker_member,
            taker_side: match taker_side {
                MatcherSide::Buy => Side::Buy,
                MatcherSide::Sell => Side::Sell,
            },
            maker_fee,
            taker_fee,
            created_at: self.now,
        });
    }
}

/// The clock at PostgreSQL's `timestamptz` precision (microseconds), so an order kept in
/// memory reads the same as its row.
fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .expect("a whole number of microseconds is a valid nanosecond")
}

fn reject_code(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::ZeroQuantity => "zero_quantity",
        RejectReason::ZeroPrice => "zero_price",
        RejectReason::BelowMinimum { .. } => "below_minimum",
        RejectReason::DuplicateId => "duplicate_id",
        RejectReason::UnknownOrder => "unknown_order",
        RejectReason::ForeignOrder => "foreign_order",
        RejectReason::PostOnlyWouldCross { .. } => "post_only_would_cross",
        RejectReason::FokNotFillable { .. } => "fok_not_fillable",
        RejectReason::SellByQuote => "sell_by_quote",
        _ => "rejected",
    }
}
