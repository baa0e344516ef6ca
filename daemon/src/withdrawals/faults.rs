//! Fault injection for the crash tests of the withdrawal flow: with
//! `COINHUB_FAULT_CRASH_AT=<point>` in its environment, coinhubd aborts (like `kill -9`,
//! without unwinding or flushing) the first time it reaches `<point>`. Unset in production.
//!
//! Points: `after_sign` (the signed transaction is stored, not yet broadcast) and
//! `after_broadcast` (the node has it, the `broadcast` state is not yet stored).

/// The environment variable naming the crash point.
pub const CRASH_AT_VAR: &str = "COINHUB_FAULT_CRASH_AT";

/// Aborts the process if [`CRASH_AT_VAR`] names `point`.
pub fn crash_point(point: &str) {
    if std::env::var(CRASH_AT_VAR).is_ok_and(|value| value == point) {
        eprintln!("coinhubd: fault injection: crashing at {point}");
        std::process::abort();
    }
}
