//! Waiting for a condition with a deadline, and free ports.

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default deadline of a condition in these tests: generous, because two tests may share
/// the machine's two cores with a build.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// Default pause between two checks of a condition.
pub const DEFAULT_POLL: Duration = Duration::from_millis(200);

/// Checks `condition` every `poll` until it returns `Ok(Some(value))` and returns that
/// value. `Ok(None)` means "not yet"; `Err` also means "not yet" (e.g. a process still
/// starting) and is remembered for the report.
///
/// Errors: after `timeout`, with `what`, the last error and the last "not yet" reason.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut condition: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_error: Option<anyhow::Error> = None;
    let mut checks = 0u64;
    loop {
        checks += 1;
        match condition().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if start.elapsed() >= timeout {
            let last = last_error
                .map(|e| format!("; last error: {e:#}"))
                .unwrap_or_default();
            anyhow::bail!(
                "timed out after {timeout:?} ({checks} checks) waiting until {what}{last}"
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// [`wait_until`] with [`DEFAULT_TIMEOUT`] and [`DEFAULT_POLL`].
pub async fn wait_for<T, F, Fut>(what: &str, condition: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    wait_until(what, DEFAULT_TIMEOUT, DEFAULT_POLL, condition).await
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not
/// handed out before. (Another process may still take it; the services started on it fail
/// loudly if so.)
pub fn free_port() -> anyhow::Result<u16> {
    let mut handed_out = HANDED_OUT.lock().expect("port registry lock poisoned");
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // OpenBao's dev server also listens on port + 1 (its cluster port).
        let neighbour_free = port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        if neighbour_free && handed_out.insert(port) {
            handed_out.insert(port + 1);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair found on 127.0.0.1")
}
