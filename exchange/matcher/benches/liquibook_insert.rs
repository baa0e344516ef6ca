//! Liquibook's insert benchmark (`test/perf/pt_order_book.cpp`) against one `OrderBook`.
//!
//! Workload, as in Liquibook: orders alternate buy and sell; buys are priced uniformly in
//! 1880–1889 ticks and sells in 1884–1893, so the six middle ticks cross and about half the
//! orders trade; quantity is 100–1,000 lots in steps of 100. Every order is a GTC limit order of
//! its own member (no self-trade prevention kicks in), so the book keeps what does not match and
//! grows through the run, as Liquibook's does. The command stream is generated up front from a
//! fixed seed (ChaCha8), then replayed into a fresh book on one thread, timing the replay only.
//!
//! Each fresh book is made with [`OrderBook::with_capacity`] for `RESTING_MAX` orders, as an
//! operator sizes a book at start: its id index is allocated (and, with `mlockall`, faulted in)
//! before the clock starts, and does not grow during the replay. The queues of orders inside
//! each price level still grow during the replay, timed. The thread is pinned to one CPU and
//! its memory locked (`support::Harness`; printed). `LIQUIBOOK_PRESIZE=0` makes the books with
//! `OrderBook::new` instead (the index then grows and rehashes inside the timed replay);
//! `MATCHER_BENCH_FIFO=1` adds real-time scheduling (off by default: a replay outlasts the
//! kernel's 950 ms real-time budget, which then takes the CPU away for 50 ms).
//!
//! Run: `cargo bench -p coinhub-matcher --bench liquibook_insert` (release profile). Prints
//! inserts/s for each of `RUNS` replays and the fraction of orders that traded.

use std::hint::black_box;
use std::time::Instant;

use coinhub_matcher::{Command, Event, Market, MemberId, OrderBook, OrderId, OrderKind, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{Harness, Interruptions};

#[path = "support/mod.rs"]
mod support;

/// Orders per replay.
const ORDERS: u64 = 10_000_000;
/// Replays, each into a fresh book.
const RUNS: usize = 5;
/// Capacity the books are made with: at most half the stream can rest (4,927,765 do at the end).
const RESTING_MAX: usize = 5_000_000;
/// Seed of the command stream.
const SEED: u64 = 0x11c0_b00c;

fn market() -> Market {
    Market {
        base: "btc".into(),
        quote: "usdt".into(),
        min_order_lots: 1,
    }
}

fn commands() -> Vec<Command> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    (0..ORDERS)
        .map(|i| {
            let is_buy = i % 2 == 0;
            let (side, lowest_ticks) = if is_buy {
                (Side::Buy, 1880)
            } else {
                (Side::Sell, 1884)
            };
            Command::Place {
                id: OrderId(i + 1),
                member: MemberId(i + 1),
                side,
                kind: OrderKind::Limit {
                    price_ticks: lowest_ticks + rng.gen_range(0..10u64),
                    quantity_lots: (rng.gen_range(0..10u64) + 1) * 100,
                    tif: coinhub_matcher::TimeInForce::Gtc,
                },
            }
        })
        .collect()
}

/// Per-thousand with one decimal, as text (no floats in this crate).
fn per_mille(part: u64, whole: u64) -> String {
    let tenths = part * 1000 / whole.max(1);
    format!("{}.{} %", tenths / 10, tenths % 10)
}

fn main() {
    let commands = commands();
    println!(
        "liquibook_insert: {ORDERS} alternating buy/sell GTC orders, buys 1880-1889, sells \
         1884-1893 ticks, 100-1,000 lots, seed {SEED:#x}"
    );
    let fifo = std::env::var("MATCHER_BENCH_FIFO").is_ok_and(|value| value == "1");
    let mut harness = Harness::setup(fifo);
    let presized = std::env::var("LIQUIBOOK_PRESIZE").map_or(true, |value| value != "0");
    if !presized {
        println!("books made with OrderBook::new (LIQUIBOOK_PRESIZE=0): the index grows, timed");
    }
    Interruptions::probe(std::time::Duration::from_millis(500)).print("environment (idle spin)");
    let mut rates = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        let allocating = Instant::now();
        let mut book = if presized {
            OrderBook::with_capacity(market(), RESTING_MAX)
        } else {
            OrderBook::new(market())
        };
        let allocated = allocating.elapsed();
        let mut events: Vec<Event> = Vec::with_capacity(64);
        let mut traded: u64 = 0;
        let start = Instant::now();
        for command in &commands {
            book.execute(command, &mut events);
            // The order traded if any event after `Accepted` is a trade.
            if matches!(events.get(1), Some(Event::Trade { .. })) {
                traded += 1;
            }
            black_box(&events);
            events.clear();
        }
        let elapsed = start.elapsed();
        let elapsed_ns = elapsed.as_nanos().max(1);
        let per_s =
            u64::try_from(u128::from(ORDERS) * 1_000_000_000 / elapsed_ns).expect("rate fits u64");
        rates.push(per_s);
        let resting = book.order_count() as u64;
        println!(
            "run {run}: {ORDERS} inserts in {:.3} s = {per_s} inserts/s (book allocated in {} \
             ms, untimed); traded on arrival {}; left the book filled (Liquibook's \
             \"matched\": inserts − resting) {}; resting at end {resting}",
            elapsed.as_secs_f64(),
            allocated.as_millis(),
            per_mille(traded, ORDERS),
            per_mille(ORDERS - resting, ORDERS),
        );
    }
    harness.normal();
    rates.sort_unstable();
    println!(
        "median {} inserts/s, range {}–{} over {RUNS} replays; load average {}",
        rates[RUNS / 2],
        rates[0],
        rates[RUNS - 1],
        support::load_average()
    );
}
