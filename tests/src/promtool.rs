//! Prometheus' linter of the text exposition format, over what a `/metrics` endpoint served.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::paths;

/// Runs `promtool check metrics` over `exposition`.
///
/// Errors: promtool missing ([`paths::promtool`]) or not running; any complaint it prints
/// (a metric without help, a counter not named `_total`, a malformed line), with the
/// exposition.
pub fn check_metrics(exposition: &str) -> anyhow::Result<()> {
    let promtool = paths::promtool()?;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", promtool.display()))?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(exposition.as_bytes())
        .context("writing to promtool")?;
    let output = child.wait_with_output().context("waiting for promtool")?;
    if !output.status.success() {
        bail!(
            "promtool check metrics refused the exposition:\n{}{}\n--- exposition ---\n{exposition}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
