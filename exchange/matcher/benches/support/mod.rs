//! Measurement set-up shared by the matcher benches: what exchange-core does for its figures
//! (pinned threads), plus locked memory and real-time scheduling, all without `unsafe`
//! (`rustix` wrappers and the `chrt` tool).
//!
//! [`Harness::setup`] tries, in order, and prints which took effect:
//! - pin the measuring thread to one CPU (`sched_setaffinity`; the last CPU it may run on, or
//!   `MATCHER_BENCH_CPU`), so it is never migrated and keeps its caches;
//! - lock all current and future memory (`mlockall(MCL_CURRENT | MCL_FUTURE)`), so the book's
//!   pages are faulted in when allocated, not on first touch inside a timed loop, and are never
//!   paged out;
//! - run it under `SCHED_FIFO` (real-time) priority 10 (via `chrt -p`, which needs root or
//!   `CAP_SYS_NICE`), so ordinary threads never preempt it; [`Harness::normal`] drops back.
//!
//! Each can be switched off with `MATCHER_BENCH_PIN=0`, `MATCHER_BENCH_MLOCK=0`,
//! `MATCHER_BENCH_FIFO=0`. A refusal is printed, never fatal: the figures are then taken
//! without it, and the printed set-up says so.

use std::process::Command;
use std::time::{Duration, Instant};

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::thread::{CpuSet, gettid, sched_getaffinity, sched_setaffinity};

/// Real-time priority used for `SCHED_FIFO` (1–99; low, above every ordinary thread).
const FIFO_PRIORITY: u32 = 10;

/// What [`Harness::setup`] put in effect.
pub struct Harness {
    /// CPU the thread is pinned to.
    pub cpu: Option<usize>,
    /// Whether `mlockall` succeeded.
    pub locked: bool,
    /// Whether the thread runs under `SCHED_FIFO`.
    pub fifo: bool,
}

fn enabled(variable: &str) -> bool {
    std::env::var(variable).map_or(true, |value| value != "0")
}

impl Harness {
    /// Pins, locks memory and raises the calling thread's priority, as far as allowed.
    pub fn setup(fifo: bool) -> Harness {
        let mut harness = Harness {
            cpu: None,
            locked: false,
            fifo: false,
        };
        if enabled("MATCHER_BENCH_PIN") {
            harness.cpu = pin();
        }
        if enabled("MATCHER_BENCH_MLOCK") {
            match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE) {
                Ok(()) => harness.locked = true,
                Err(error) => println!("note: mlockall refused ({error}); memory not locked"),
            }
        }
        if fifo && enabled("MATCHER_BENCH_FIFO") {
            harness.fifo = set_fifo(true);
        }
        harness.print();
        harness
    }

    /// Back to the normal scheduler (for untimed work between measurements).
    pub fn normal(&mut self) {
        if self.fifo {
            set_fifo(false);
            self.fifo = false;
        }
    }

    fn print(&self) {
        let cpu = self.cpu.map_or("not pinned".to_string(), |cpu| {
            format!("pinned to cpu {cpu}")
        });
        let locked = if self.locked {
            "mlockall(CURRENT|FUTURE) on"
        } else {
            "memory not locked"
        };
        let fifo = if self.fifo {
            format!("SCHED_FIFO priority {FIFO_PRIORITY}")
        } else {
            "normal scheduling".to_string()
        };
        println!(
            "set-up: {cpu}; {locked}; {fifo}; load average {}",
            load_average()
        );
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or("unknown".to_string(), |text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn pin() -> Option<usize> {
    let allowed = match sched_getaffinity(None) {
        Ok(set) => set,
        Err(error) => {
            println!("note: sched_getaffinity failed ({error}); not pinned");
            return None;
        }
    };
    let cpu = match std::env::var("MATCHER_BENCH_CPU") {
        Ok(cpu) => cpu.parse().expect("MATCHER_BENCH_CPU is a CPU number"),
        Err(_) => (0..CpuSet::MAX_CPU)
            .rev()
            .find(|&cpu| allowed.is_set(cpu))?,
    };
    let mut set = CpuSet::new();
    set.set(cpu);
    match sched_setaffinity(None, &set) {
        Ok(()) => Some(cpu),
        Err(error) => {
            println!("note: sched_setaffinity to cpu {cpu} refused ({error}); not pinned");
            None
        }
    }
}

/// Switches the calling thread to `SCHED_FIFO` (or back to `SCHED_OTHER`) with `chrt`; rustix
/// offers no `sched_setscheduler` and the workspace forbids `unsafe`.
fn set_fifo(on: bool) -> bool {
    let tid = gettid().as_raw_nonzero().to_string();
    let mut chrt = Command::new("chrt");
    if on {
        chrt.args(["--fifo", "--pid", &FIFO_PRIORITY.to_string(), &tid]);
    } else {
        chrt.args(["--other", "--pid", "0", &tid]);
    }
    match chrt.output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            println!(
                "note: chrt refused ({}); {}",
                String::from_utf8_lossy(&output.stderr).trim(),
                if on {
                    "normal scheduling"
                } else {
                    "still real-time"
                }
            );
            false
        }
        Err(error) => {
            println!("note: chrt not run ({error}); normal scheduling");
            false
        }
    }
}

/// How often the thread lost the CPU while doing nothing but read the clock: the environment's
/// share of any latency tail (timer ticks, interrupts, other tenants of the host).
pub struct Interruptions {
    /// Length of the probe.
    pub elapsed: Duration,
    /// Gaps between consecutive clock reads above 2, 5, 20 and 50 µs.
    pub over_ns: [(u64, u64); 4],
    /// Longest gap.
    pub max_ns: u64,
    /// Time lost in gaps above 2 µs.
    pub lost_ns: u64,
}

impl Interruptions {
    /// Spins for `duration` reading the clock and counts the gaps.
    pub fn probe(duration: Duration) -> Interruptions {
        let mut over_ns = [(2_000, 0), (5_000, 0), (20_000, 0), (50_000, 0)];
        let (mut max_ns, mut lost_ns) = (0u64, 0u64);
        let start = Instant::now();
        let mut previous = start;
        loop {
            let now = Instant::now();
            let gap_ns = u64::try_from((now - previous).as_nanos()).expect("fits u64");
            if gap_ns > over_ns[0].0 {
                lost_ns += gap_ns;
                for (threshold_ns, count) in &mut over_ns {
                    if gap_ns > *threshold_ns {
                        *count += 1;
                    }
                }
            }
            max_ns = max_ns.max(gap_ns);
            previous = now;
            if now - start >= duration {
                break;
            }
        }
        Interruptions {
            elapsed: start.elapsed(),
            over_ns,
            max_ns,
            lost_ns,
        }
    }

    /// One line for the bench output.
    pub fn print(&self, label: &str) {
        let seconds_ms = self.elapsed.as_millis().max(1);
        let counts: Vec<String> = self
            .over_ns
            .iter()
            .map(|(threshold_ns, count)| {
                format!(
                    "> {} µs {}/s",
                    threshold_ns / 1000,
                    u128::from(*count) * 1000 / seconds_ms
                )
            })
            .collect();
        println!(
            "{label}: clock-read gaps {}; longest {} µs; {} µs/s lost in gaps > 2 µs",
            counts.join(", "),
            self.max_ns / 1000,
            u128::from(self.lost_ns) / 1000 * 1000 / seconds_ms,
        );
    }
}
