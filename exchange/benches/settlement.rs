//! End to end through the ledger: settled trades/s and latency from "order accepted" (the
//! batch that matched the order ran: its `created_at`) to "trade settled" (the `place` call
//! returning after the batch's commit), with PostgreSQL and fsync on (`synchronous_commit =
//! on`; printed at start). The client's view, from the `place` call (so queueing for the next
//! batch included), is printed next to it.
//!
//! Workload: `CLIENTS` concurrent clients; each owns a maker and a taker member and loops:
//! place a 1-lot GTC sell at 1000 ticks (it rests), then a 1-lot GTC buy at 1000 ticks (it
//! takes the oldest resting sell: exactly one trade per buy, never a self-trade). The engine
//! settles whatever is waiting (up to 4,096 commands) in one database transaction: command
//! log, orders, trades, one netted `trade_settlement` journal transfer and, unless
//! `SETTLEMENT_EVENTS=off`, the `exchange.events` outbox rows. Latency is measured on the buys.
//! At the end the trade count, the fee account and the journal audit are checked, and the
//! CPU time per settled trade is printed from `/proc` (Linux): this process's (engine, writers,
//! projector and the clients) and the rest of the machine's (PostgreSQL, when it runs here).
//!
//! Run: `cargo bench -p coinhub-exchange --bench settlement`. Environment (optional):
//! `DATABASE_URL` (admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`: the server is on this host,
//! reached over loopback without TLS, as a service next to its database connects, e.g. by a
//! Unix socket; `?sslmode=prefer` measures with TLS, sqlx's default; a fresh database is
//! created and dropped, with the URL's options), `SETTLEMENT_TRADES` (default 200000),
//! `SETTLEMENT_CLIENTS` (default 4000: the closed loop's concurrency, which sets the batch
//! size; docs/benchmarks.md has the rate and latency at 2,000–6,000), `SETTLEMENT_MEMBERS`
//! (default 200),
//! `SETTLEMENT_EVENTS` (`outbox` or `off`, default `outbox`), `SETTLEMENT_HISTORY_TRADES`
//! (default 0: trades settled first by the same loop, unmeasured, then projected, vacuumed and
//! checkpointed, so that the measured run writes into a journal and read models as large as a
//! long-lived exchange's; the checks count them too), `SETTLEMENT_KEEP_DATABASE` (if set, the bench's
//! database is kept, and its name printed, to be looked into), `SETTLEMENT_WARMUP_MS` (default
//! 1000: trades settled in the first second are left out of the steady-state rate and
//! percentiles; the whole run's are printed too), `SETTLEMENT_RELAY_AMQP_URL`
//! (if set, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`: after settling, the stored
//! `exchange.events` messages are published to that broker by the relay's own round,
//! `trading::events::publish_next_batch`, with publisher confirms, and messages/s printed; the
//! exchange is declared, no queue is bound, so the broker drops them after confirming).

// Rates and percentiles for the report only; no money is computed in floats.
#![allow(missing_docs, clippy::float_arithmetic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coinhub_events::{BaseUnits, DepositEvent, DepositEventKind, SCHEMA_VERSION};
use coinhub_exchange::markets::{MarketConfig, MarketsConfig, UnitsValue};
use coinhub_exchange::trading::{EventsSink, MemberId, NewOrder, OrderKind, Side, TradingEngine};
use coinhub_exchange::{db, deposits, journal, memory};
use hdrhistogram::Histogram;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn deposit(member: &str, asset: &str, amount: &str, decimals: u8) -> DepositEvent {
    let txid = format!("0x{}", Uuid::new_v4().simple());
    DepositEvent {
        version: SCHEMA_VERSION,
        id: Uuid::new_v4(),
        event: DepositEventKind::Confirmed,
        occurred_at: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("valid nanosecond"),
        deposit_id: DepositEvent::deposit_id_for("bench", &txid, 0),
        chain: "bench".into(),
        asset: asset.into(),
        member: member.parse().expect("member id"),
        address: "bench".into(),
        txid,
        index: 0,
        amount: amount.parse::<BaseUnits>().expect("amount"),
        decimals,
        block_height: 1,
        block_hash: "0x00".into(),
        confirmations: 1,
        was_confirmed: false,
    }
}

fn order(side: Side) -> NewOrder {
    NewOrder {
        market: "btc_usdt".into(),
        side,
        kind: OrderKind::Limit,
        price: Some("100000".into()),
        quantity: Some("1000".into()),
        quote_amount: None,
        time_in_force: None,
        client_order_id: None,
    }
}

/// The same allocator as the `coinhub-exchange` binary, also without transparent huge pages
/// (`main` turns them off first, as the binary's does).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    memory::disable_transparent_huge_pages()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let trades_total = env_u64("SETTLEMENT_TRADES", 200_000);
    let warmup = Duration::from_millis(env_u64("SETTLEMENT_WARMUP_MS", 1_000));
    let clients = env_u64("SETTLEMENT_CLIENTS", 4_000);
    let members = env_u64("SETTLEMENT_MEMBERS", 200).max(2) & !1;
    let events = match std::env::var("SETTLEMENT_EVENTS").as_deref() {
        Ok("off") => EventsSink::Disabled,
        _ => EventsSink::Outbox,
    };
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned()
    });
    // The bench's database: the admin URL's, renamed; its options (`?sslmode=…`) kept.
    let (path, options) = admin
        .split_once('?')
        .map_or((admin.as_str(), String::new()), |(p, o)| {
            (p, format!("?{o}"))
        });
    let server = path.rsplit_once('/').map_or(path, |(s, _)| s).to_owned();
    let name = format!("coinhub_bench_{}", Uuid::new_v4().simple());
    let mut admin_conn = PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin_conn)
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&format!("{server}/{name}{options}"))
        .await?;
    let result = run(
        &pool,
        trades_total,
        clients,
        members,
        events,
        warmup,
        env_u64("SETTLEMENT_HISTORY_TRADES", 0),
    )
    .await;
    pool.close().await;
    if std::env::var_os("SETTLEMENT_KEEP_DATABASE").is_some() {
        println!("database {name} kept (SETTLEMENT_KEEP_DATABASE): drop it when done");
    } else {
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin_conn)
            .await?;
    }
    result
}

async fn run(
    pool: &sqlx::PgPool,
    trades_total: u64,
    clients: u64,
    members: u64,
    events: EventsSink,
    warmup: Duration,
    history: u64,
) -> anyhow::Result<()> {
    db::migrate(pool).await?;
    let (fsync, sync_commit, tls): (String, String, bool) = sqlx::query_as(
        "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
                coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
    )
    .fetch_one(pool)
    .await?;
    let thp_off = rustix::thread::transparent_huge_pages_are_disabled()?;
    println!(
        "exchange settlement: trades={trades_total} history={history} clients={clients} \
         members={members} events={events:?} fsync={fsync} synchronous_commit={sync_commit} tls={tls} \
         thp_disabled={thp_off}"
    );
    for i in 0..members {
        let who = format!("m{i}");
        deposits::apply(pool, &deposit(&who, "BTC", "1000000000000", 8)).await?;
        deposits::apply(pool, &deposit(&who, "USDT", "1000000000000000", 6)).await?;
    }
    let mut markets = BTreeMap::new();
    markets.insert(
        "btc_usdt".to_owned(),
        MarketConfig {
            base: "BTC".into(),
            quote: "USDT".into(),
            tick_size: UnitsValue::Text("100".into()),
            lot_size: UnitsValue::Text("1000".into()),
            min_quantity: None,
            maker_fee_bps: 10,
            taker_fee_bps: 20,
        },
    );
    let engine = TradingEngine::start(pool.clone(), MarketsConfig(markets), events).await?;
    // (trades, settlement transactions) before the measured run.
    let (trades_before, batches_before) = if history > 0 {
        settle_history(pool, &engine, history, clients, members).await?
    } else {
        (0, 0)
    };
    let cpu_before = CpuTicks::now();
    let started = Instant::now();
    let samples = drive(&engine, clients, members, trades_total, started).await?;
    let elapsed = started.elapsed();
    let cpu_used = cpu_before
        .zip(CpuTicks::now())
        .map(|(before, after)| after.since(before));
    // `orders` and `trades` are projected after the commits, in the background: how long
    // until they hold everything settled.
    let projected = count_trades(pool).await? - trades_before;
    let projecting = Instant::now();
    coinhub_exchange::trading::projection::catch_up_all(pool).await?;
    let projection_lag = projecting.elapsed();
    let trades_in_all = count_trades(pool).await?;
    let settled_in_all = history + trades_total;
    anyhow::ensure!(
        trades_in_all as u64 == settled_in_all,
        "{trades_in_all} trades settled, expected {settled_in_all}"
    );
    // The measured run's.
    let trades = trades_in_all - trades_before;
    let batches = count_settlements(pool).await? - batches_before;
    let fees: String = sqlx::query_scalar(
        "SELECT balance::text FROM accounts WHERE kind = 'fee_revenue' AND asset = 'USDT'",
    )
    .fetch_one(pool)
    .await?;
    // Each trade: notional 100,000; maker 10 bps = 100, taker 20 bps = 200.
    anyhow::ensure!(
        fees == (settled_in_all * 300).to_string(),
        "fee revenue {fees}"
    );
    let mut conn = pool.acquire().await?;
    let findings = journal::audit(&mut conn).await?;
    anyhow::ensure!(findings.is_empty(), "journal audit: {findings:?}");
    let seconds = elapsed.as_secs_f64();
    println!(
        "settled {trades} trades ({} commands) in {seconds:.2} s: {:.0} trades/s, {:.0} commands/s; \
         {batches} transactions (~{:.0} commands each)",
        trades * 2,
        trades as f64 / seconds,
        (trades * 2) as f64 / seconds,
        (trades * 2) as f64 / batches.max(1) as f64,
    );
    println!(
        "read models (orders, trades): {} trades behind at the last answer, caught up \
         {projection_lag:?} later ({:.0} trades/s projected alone); {:.0} trades/s settled and \
         projected",
        trades - projected,
        (trades - projected) as f64 / projection_lag.as_secs_f64(),
        trades as f64 / (elapsed + projection_lag).as_secs_f64()
    );
    report_latency(&samples, warmup, elapsed)?;
    if let Some(used) = cpu_used {
        used.report(elapsed, trades);
    }
    // Heap-only updates (no index entries): what migrations 0008 (`orders`) and 0017
    // (`accounts`) are for.
    for table in ["orders", "accounts"] {
        let (updates, hot, size): (i64, i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size(relid)
               FROM pg_stat_user_tables WHERE relname = $1",
        )
        .bind(table)
        .fetch_one(pool)
        .await?;
        println!(
            "{table}: {updates} row updates, {hot} of them heap-only (HOT); table {} KiB",
            size / 1024
        );
    }
    println!("checks: trade count, fee revenue and journal audit OK");
    if let Ok(url) = std::env::var("SETTLEMENT_RELAY_AMQP_URL") {
        relay(pool, &url).await?;
    }
    Ok(())
}

/// Runs the closed loop of `clients` until `trades_total` trades have settled: each client
/// places a resting sell for its maker, then a buy for its taker that takes the oldest resting
/// sell. Returns each buy's latency sample, times measured from `started`.
async fn drive(
    engine: &TradingEngine,
    clients: u64,
    members: u64,
    trades_total: u64,
    started: Instant,
) -> anyhow::Result<Vec<Sample>> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let engine = engine.clone();
        let issued = issued.clone();
        let maker: MemberId = format!("m{}", (2 * client) % members)
            .parse()
            .expect("member");
        let taker: MemberId = format!("m{}", (2 * client + 1) % members)
            .parse()
            .expect("member");
        tasks.push(tokio::spawn(async move {
            // Raw samples, merged into histograms at the end: a histogram per client
            // (~400 KB each) would cost thousands of page faults the engine then competes with.
            let mut samples = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < trades_total {
                engine
                    .place(&maker, order(Side::Sell))
                    .await
                    .expect("sell rests");
                let at = Instant::now();
                let buy = engine
                    .place(&taker, order(Side::Buy))
                    .await
                    .expect("buy settles");
                let answered = OffsetDateTime::now_utc();
                assert_eq!(buy.status, "filled", "every buy takes one resting sell");
                let accepted = OffsetDateTime::parse(&buy.created_at, &Rfc3339)
                    .expect("created_at is RFC 3339");
                samples.push(Sample {
                    done_us: micros(started.elapsed()),
                    submitted_us: micros(at.elapsed()),
                    accepted_us: micros((answered - accepted).unsigned_abs()),
                });
            }
            samples
        }));
    }
    let mut samples = Vec::with_capacity(usize::try_from(trades_total)?);
    for task in tasks {
        samples.extend(task.await?);
    }
    Ok(samples)
}

/// The history of a long-lived exchange (`SETTLEMENT_HISTORY_TRADES`): settles `trades` by
/// the same loop, unmeasured, projects them, runs `VACUUM (ANALYZE)` as autovacuum would have
/// by then, and a `CHECKPOINT` (superuser), so that the measured run writes into a journal and read models that already
/// hold that many rows. Prints their sizes. Returns the trades and settlement transactions
/// (`trade_settlement` transfers) written.
async fn settle_history(
    pool: &sqlx::PgPool,
    engine: &TradingEngine,
    trades: u64,
    clients: u64,
    members: u64,
) -> anyhow::Result<(i64, i64)> {
    let started = Instant::now();
    drive(engine, clients, members, trades, started).await?;
    let settled = started.elapsed();
    coinhub_exchange::trading::projection::catch_up_all(pool).await?;
    sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
    // The vacuum's WAL would otherwise start a checkpoint during the measured run, whose
    // first change to each page then logs the whole page.
    sqlx::query("CHECKPOINT").execute(pool).await?;
    let (entries, orders, journal_bytes, read_model_bytes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM orders),
                    pg_total_relation_size('entries') + pg_total_relation_size('transfers'),
                    pg_total_relation_size('orders') + pg_total_relation_size('trades')",
    )
    .fetch_one(pool)
    .await?;
    let trades_written = count_trades(pool).await?;
    let batches = count_settlements(pool).await?;
    println!(
        "history: {trades_written} trades settled in {:.1} s ({batches} transactions), \
         projected and vacuumed in {:.1} s in all; journal {entries} entries ({} MiB with \
         transfers and indexes), read models {orders} orders ({} MiB with trades and indexes)",
        settled.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        journal_bytes >> 20,
        read_model_bytes >> 20,
    );
    Ok((trades_written, batches))
}

/// Rows in the `trades` read model.
async fn count_trades(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM trades")
        .fetch_one(pool)
        .await?)
}

/// Settlement transactions so far: one `trade_settlement` journal transfer each.
async fn count_settlements(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'trade_settlement'")
            .fetch_one(pool)
            .await?,
    )
}

/// One settled buy, in microseconds.
struct Sample {
    /// When its answer came, since the run started.
    done_us: u64,
    /// From the `place` call to its answer: queueing for the next batch included.
    submitted_us: u64,
    /// From its acceptance (the batch that matched it ran: the order's `created_at`) to its
    /// answer, which comes after the batch's commit.
    accepted_us: u64,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Prints the steady-state rate and latency percentiles (buys answered after `warmup`: the
/// first batches run on cold caches and unprepared statements, and every client starts at
/// once), then the whole run's.
fn report_latency(samples: &[Sample], warmup: Duration, elapsed: Duration) -> anyhow::Result<()> {
    let warmup_us = micros(warmup);
    let histogram = |steady: bool, pick: fn(&Sample) -> u64| -> anyhow::Result<Histogram<u64>> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for sample in samples.iter().filter(|s| !steady || s.done_us >= warmup_us) {
            histogram.saturating_record(pick(sample));
        }
        Ok(histogram)
    };
    let line = |what: &str, h: &Histogram<u64>| {
        let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        println!(
            "  {what}: p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
            at(0.50),
            at(0.99),
            at(0.999),
            Duration::from_micros(h.max())
        );
    };
    let steady = histogram(true, |s| s.accepted_us)?;
    anyhow::ensure!(
        !steady.is_empty(),
        "no trade settled after the {warmup:?} warm-up; lower SETTLEMENT_WARMUP_MS"
    );
    println!(
        "steady state (after the first {warmup:?}): {} trades, {:.0} trades/s",
        steady.len(),
        steady.len() as f64 / elapsed.saturating_sub(warmup).as_secs_f64()
    );
    line("accepted -> settled ", &steady);
    line(
        "submitted -> settled",
        &histogram(true, |s| s.submitted_us)?,
    );
    println!("whole run, warm-up included:");
    line(
        "accepted -> settled ",
        &histogram(false, |s| s.accepted_us)?,
    );
    line(
        "submitted -> settled",
        &histogram(false, |s| s.submitted_us)?,
    );
    Ok(())
}

/// Linux's `USER_HZ`: `/proc` counts CPU time in ticks of 1/100 s (fixed by its ABI on x86
/// and ARM).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time from `/proc` (Linux), in ticks of 1 / [`TICKS_PER_SECOND`] s: this process (its
/// user and system time: the engine, its writers and projector, and the bench's clients) and
/// all cores (busy: everything but idle, I/O wait and time stolen by the hypervisor).
#[derive(Clone, Copy)]
struct CpuTicks {
    process: u64,
    busy: u64,
    /// Busy and idle, without stolen time.
    total: u64,
    /// Time the hypervisor ran something else while this VM's cores had work.
    stolen: u64,
}

impl CpuTicks {
    /// The counters now, or `None` where `/proc` does not have them (not Linux).
    fn now() -> Option<Self> {
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal (guest time is inside user).
        let fields: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            return None;
        };
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let after_name: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = after_name.get(11)?.parse().ok()?;
        let stime: u64 = after_name.get(12)?.parse().ok()?;
        let busy = user + nice + system + irq + softirq;
        Some(Self {
            process: utime + stime,
            busy,
            total: busy + idle + iowait,
            stolen: steal,
        })
    }

    /// The ticks used between `before` and `self`.
    fn since(self, before: Self) -> Self {
        Self {
            process: self.process.saturating_sub(before.process),
            busy: self.busy.saturating_sub(before.busy),
            total: self.total.saturating_sub(before.total),
            stolen: self.stolen.saturating_sub(before.stolen),
        }
    }

    /// Prints the cores busy during `elapsed` and the CPU time per settled trade, split into
    /// this process and the rest of the machine (PostgreSQL, and anything else running).
    fn report(self, elapsed: Duration, trades: i64) {
        let seconds = elapsed.as_secs_f64();
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND as f64 / seconds;
        let per_trade_us =
            |ticks: u64| ticks as f64 * 1e6 / TICKS_PER_SECOND as f64 / trades as f64;
        let rest = self.busy.saturating_sub(self.process);
        println!(
            "cpu while settling (whole run, /proc): {:.2} of {:.2} cores busy ({:.2} stolen by \
             the hypervisor): this process {:.2}, the rest of the machine {:.2} (PostgreSQL and \
             anything else); per settled trade {:.0} µs: this process {:.0} µs, the rest {:.0} µs",
            cores(self.busy),
            cores(self.total),
            cores(self.stolen),
            cores(self.process),
            cores(rest),
            per_trade_us(self.busy),
            per_trade_us(self.process),
            per_trade_us(rest),
        );
    }
}

/// Publishes every stored `exchange.events` message as the relay does, and prints the rate.
async fn relay(pool: &sqlx::PgPool, url: &str) -> anyhow::Result<()> {
    use coinhub_events::publisher::ConfirmingPublisher;
    use coinhub_exchange::trading::{self, events};
    let connection =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let publisher = ConfirmingPublisher::open(&connection).await?;
    trading::declare_exchange(publisher.channel()).await?;
    let waiting = events::unpublished(pool).await?;
    let started = Instant::now();
    let mut sent = 0;
    loop {
        let published =
            events::publish_next_batch(pool, &publisher, Duration::from_secs(60)).await?;
        if published == 0 {
            break;
        }
        sent += published;
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        i64::try_from(sent)? == waiting && events::unpublished(pool).await? == 0,
        "relay published {sent} of {waiting} messages"
    );
    println!(
        "relay: {sent} messages published with confirms in {seconds:.2} s: {:.0} messages/s",
        sent as f64 / seconds
    );
    connection.close(200, "bench done".into()).await?;
    Ok(())
}
