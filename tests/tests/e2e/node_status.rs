//! A node that goes down is shown as such by `coinhub status`, and coinhubd recovers when
//! it comes back.

use std::time::Duration;

use coinhub_tests::coinhubd::ChainStatus;
use coinhub_tests::stack::{CHAIN, DECIMALS};
use coinhub_tests::{Coinhubd, Stack, StackOptions, run_test, to_base_units, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// The chain's row of `coinhub status` (the table), and its JSON status (`--json`).
async fn cli_status(coinhubd: &Coinhubd) -> anyhow::Result<(String, ChainStatus)> {
    let table = coinhubd.cli(&["status"]).await?;
    anyhow::ensure!(
        table.status.success(),
        "coinhub status failed: {}",
        String::from_utf8_lossy(&table.stderr)
    );
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let row = table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(CHAIN))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {CHAIN} row in:\n{table}"))?;
    let json = coinhubd.cli(&["status", "--json"]).await?;
    anyhow::ensure!(json.status.success(), "coinhub status --json failed");
    let status: coinhub_tests::coinhubd::Status = serde_json::from_slice(&json.stdout)?;
    let chain = status
        .chain(CHAIN)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no {CHAIN} in status --json"))?;
    Ok((row, chain))
}

fn says_down(row: &str) -> bool {
    let row = row.to_lowercase();
    row.split_whitespace()
        .any(|word| word == "down" || word == "unreachable")
}

/// Proves: while the chain's node is down, `coinhub status` (table and `--json`) shows it
/// unreachable with the error, and coinhubd itself keeps running; when the node is back,
/// the status shows it reachable again without a restart of coinhubd, and the watcher works
/// again (a new deposit is detected).
///
/// Steps: start coinhubd on anvil (no token, no exchange, so the chain stays at its
/// genesis); wait until status shows the node reachable; SIGKILL anvil; wait until
/// `coinhub status` shows the node down (`node_reachable: false`, a `last_error`), check
/// `/healthz`; restart anvil on the same port (same genesis, fresh chain); wait until
/// `coinhub status` shows it up with no error; send 0.1 ETH to a member's address and wait
/// until it is detected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_down_node_and_its_recovery() {
    run_test(
        "status_shows_a_down_node_and_its_recovery",
        |env| async move {
            let options = StackOptions {
                with_token: false,
                with_exchange: false,
                ..StackOptions::default()
            };
            let mut stack = Stack::start(&env, options).await?;
            let erin = stack.deposit_address("erin").await?;

            let (row, _) = wait_until(
                "coinhub status shows the node up",
                WAIT,
                Duration::from_millis(300),
                || async {
                    let (row, chain) = cli_status(&stack.coinhubd).await?;
                    Ok((chain.node_reachable && !says_down(&row)).then_some((row, chain)))
                },
            )
            .await?;
            assert!(!says_down(&row), "{row}");

            stack.anvil.kill();
            let (row, chain) = wait_until(
                "coinhub status shows the node down",
                WAIT,
                Duration::from_millis(300),
                || async {
                    let (row, chain) = cli_status(&stack.coinhubd).await?;
                    Ok((!chain.node_reachable && says_down(&row)).then_some((row, chain)))
                },
            )
            .await?;
            assert!(
                chain.last_error.is_some(),
                "the error is shown: {chain:?} / {row}"
            );
            assert!(
                stack.coinhubd.api().healthz().await?,
                "coinhubd keeps running without its node"
            );
            stack.coinhubd.ensure_running()?;

            stack.anvil.restart().await?;
            wait_until(
                "coinhub status shows the node up again",
                WAIT,
                Duration::from_millis(300),
                || async {
                    let (row, chain) = cli_status(&stack.coinhubd).await?;
                    Ok(
                        (chain.node_reachable && chain.last_error.is_none() && !says_down(&row))
                            .then_some(()),
                    )
                },
            )
            .await?;

            let chain = stack.anvil.client()?;
            let txid = chain
                .send_eth(1, erin, to_base_units("0.1", DECIMALS))
                .await?
                .transaction_hash
                .to_string();
            stack
                .coinhubd
                .api()
                .wait_deposit_status("erin", &txid, "detected", WAIT)
                .await?;
            Ok(())
        },
    )
    .await;
}
